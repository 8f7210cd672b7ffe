#include "builder/server.h"
#include "builder/import.h"
#include "builder/layer.h"
#include "common/auth.h"
#include "common/files.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <filesystem>
#include <system_error>

#include "builder/descriptor.h"
#include "builder/extract.h"
#include "builder/fsutil.h"
#include "common/json.h"

namespace qufop::builder {

namespace fs = std::filesystem;

namespace {

constexpr size_t kChunk = 1 << 20;

http::Response registry_error(int status, std::string_view code, std::string_view message) {
  http::Response r;
  r.status = status;
  r.content_type = "application/json";
  r.body = registry_error_body(code, message);
  r.headers.emplace_back("Docker-Distribution-API-Version", "registry/2.0");
  return r;
}

std::string result_line(const Result<BuildResult>& r) {
  json::Object o;
  if (r) {
    o["digest"] = r->manifest.digest;
    o["ref"] = r->ref;
  } else {
    o["error"] = r.error().code;
    o["message"] = r.error().message;
  }
  return json::serialize(o) + "\n";
}

// Where the last "/manifests/" or "/blobs/" splits "/v2/<name>/<kind>/<ref>".
bool split_registry_path(std::string_view path, std::string* name, std::string* kind,
                         std::string* ref) {
  path.remove_prefix(4);  // "/v2/"
  for (std::string_view k : {"/manifests/", "/blobs/"}) {
    auto pos = path.rfind(k);
    if (pos == std::string_view::npos || pos == 0) continue;
    *name = std::string(path.substr(0, pos));
    *kind = std::string(k.substr(1, k.size() - 2));
    *ref = std::string(path.substr(pos + k.size()));
    return !ref->empty() && ref->find('/') == std::string::npos;
  }
  return false;
}

}  // namespace

namespace {

// A request body saved to a file in a fresh temp dir under the service's upload dir; the dir
// goes when this does.
class SavedUpload {
 public:
  static Result<std::unique_ptr<SavedUpload>> save(const std::string& upload_dir,
                                                   const std::string& prefix, std::string_view body,
                                                   const std::string& file_name) {
    std::error_code ec;
    fs::create_directories(upload_dir, ec);
    std::string dir = upload_dir + "/" + prefix + "-XXXXXX";
    if (!::mkdtemp(dir.data())) return Error::sys("mkdtemp in " + upload_dir, errno);
    std::unique_ptr<SavedUpload> saved(new SavedUpload(dir, dir + "/" + file_name));
    Fd fd(::open(saved->file_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd.valid()) return Error::sys("open(" + saved->file_ + ")", errno);
    QF_TRY(write_all(fd.get(), body, saved->file_));
    return saved;
  }
  ~SavedUpload() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  const std::string& dir() const { return dir_; }
  const std::string& file() const { return file_; }

 private:
  SavedUpload(std::string dir, std::string file) : dir_(std::move(dir)), file_(std::move(file)) {}
  std::string dir_, file_;
};

}  // namespace

std::string registry_error_body(std::string_view code, std::string_view message) {
  json::Object e;
  e["code"] = code;
  e["message"] = message;
  e["detail"] = json::Object{};
  json::Array errors;
  errors.push_back(std::move(e));
  json::Object o;
  o["errors"] = std::move(errors);
  return json::serialize(o);
}

Service::Service(http::Server& server, Builder& builder, ServiceOptions options)
    : builder_(builder), options_(std::move(options)) {
  server.route_async("POST", "/v1/builds", [this](http::Request req, http::Responder res) {
    post_build(std::move(req), std::move(res));
  });
  server.route_async("POST", "/v1/images", [this](http::Request req, http::Responder res) {
    post_image(std::move(req), std::move(res));
  });
  server.route("GET", "/v2/", [](const http::Request&) {
    http::Response r;
    r.body = "{}";
    r.headers.emplace_back("Docker-Distribution-API-Version", "registry/2.0");
    return r;
  });
  server.route_prefix("GET", "/v2/", [this](http::Request req, http::Responder res) {
    registry(std::move(req), std::move(res));
  });
}

Service::~Service() { shutdown(); }

void Service::shutdown() {
  std::vector<Worker> threads;
  {
    std::lock_guard lock(mu_);
    threads.swap(threads_);
  }
  for (auto& w : threads) w.thread.join();
}

bool Service::token_ok(const http::Request& req, http::Responder& res) const {
  std::string token = options_.join_token;
  if (token.empty() && !options_.join_token_file.empty()) {
    if (auto t = auth::read_token_file(options_.join_token_file); t) token = *t;
  }
  if (token.empty() || auth::bearer_matches(req.header("Authorization"), token)) return true;
  res.send(
      http::Response::error(401, "unauthorized", "builds and imports need the cluster join token"));
  return false;
}

void Service::post_image(http::Request req, http::Responder res) {
  if (!token_ok(req, res)) return;
  std::string name = req.query_param("name");
  auto ref = parse_image_ref(name);
  if (name.empty() || !ref || !ref->digest.empty() || ref->scratch) {
    return res.send(http::Response::error(400, "invalid_argument",
                                          "name: expected ?name=NAME[:TAG], got '" + name + "'" +
                                              (ref ? std::string() : ": " + ref.error().message)));
  }
  auto upload = SavedUpload::save(options_.upload_dir, "image", req.body, "image.tar");
  if (!upload) return res.send(http::Response::error(500, "internal", upload.error().message));
  auto manifest = import_image(builder_.store(), name, (*upload)->file(), (*upload)->dir());
  if (!manifest) {
    return res.send(http::Response::error(400, "invalid_image", manifest.error().message));
  }
  spdlog::info("imported base image {} ({})", name, manifest->digest);
  json::Object o{{"name", name}, {"digest", manifest->digest}};
  res.send({201, "application/json", {}, json::serialize(o)});
}

void Service::post_build(http::Request req, http::Responder res) {
  if (!token_ok(req, res)) return;
  std::string ufop = req.query_param("ufop");
  std::string version = req.query_param("version");
  if (ufop.empty() || version.empty()) {
    return res.send(
        http::Response::error(400, "invalid_argument", "expected ?ufop=NAME&version=N"));
  }
  auto ref = parse_image_ref(ufop + ":" + version);
  if (!ref || !ref->digest.empty() || ref->scratch || ref->name != ufop) {
    return res.send(http::Response::error(400, "invalid_argument",
                                          "'" + ufop + ":" + version +
                                              "' is not a valid image NAME:TAG" +
                                              (ref ? std::string() : ": " + ref.error().message)));
  }
  std::lock_guard lock(mu_);
  if (running_ >= options_.max_builds) {
    return res.send(
        http::Response::error(429, "resource_exhausted",
                              std::to_string(running_) + " builds are running; try again later"));
  }
  // Threads of finished builds are joined as new ones come.
  for (auto it = threads_.begin(); it != threads_.end();) {
    if (*it->done) {
      it->thread.join();
      it = threads_.erase(it);
    } else {
      ++it;
    }
  }
  ++running_;
  auto done = std::make_shared<std::atomic<bool>>(false);
  std::thread t([this, done, req = std::move(req), res = std::move(res), ufop, version]() mutable {
    run_build(std::move(req), std::move(res), ufop, version);
    std::lock_guard lock(mu_);
    --running_;
    *done = true;
  });
  threads_.push_back({std::move(t), std::move(done)});
}

void Service::run_build(http::Request req, http::Responder res, std::string ufop,
                        std::string version) {
  auto upload = SavedUpload::save(options_.upload_dir, "upload", req.body, "upload.tar");
  if (!upload) return res.send(http::Response::error(500, "internal", upload.error().message));
  const std::string& archive = (*upload)->file();
  req.body.clear();
  req.body.shrink_to_fit();
  std::string dir = (*upload)->dir() + "/src";
  if (auto r = extract_upload(archive, dir, options_.upload_limits); !r) {
    return res.send(http::Response::error(400, "invalid_upload", r.error().message));
  }
  std::error_code ec;
  fs::remove(archive, ec);
  auto descriptor = load_descriptor(dir + "/ufop.yaml");
  if (!descriptor) {
    return res.send(http::Response::error(400, "invalid_descriptor", descriptor.error().message));
  }
  res.start_stream(200, "text/plain; charset=utf-8");
  spdlog::info("build {}:{} started", ufop, version);
  auto result = builder_.build(*descriptor, dir, ufop, version, [&res](std::string_view line) {
    if (!res.closed()) res.write(std::string(line) + "\n");
  });
  if (result) {
    spdlog::info("build {} done: {}", result->ref, result->manifest.digest);
  } else {
    spdlog::info("build {}:{} failed: {}", ufop, version, result.error().message);
  }
  res.write(result_line(result));
  res.finish();
}

void Service::registry(http::Request req, http::Responder res) {
  const OciStore& store = builder_.store();
  std::string name, kind, ref;
  if (std::string_view p = req.path; p.size() > 14 && p.ends_with("/tags/list")) {
    name = std::string(p.substr(4, p.size() - 14));
    auto images = store.list();
    if (!images) return res.send(registry_error(500, "UNKNOWN", images.error().message));
    json::Array tags;
    for (const auto& i : *images) {
      if (i.name == name) tags.emplace_back(i.tag);
    }
    if (tags.empty()) {
      return res.send(registry_error(404, "NAME_UNKNOWN", "repository " + name + " unknown"));
    }
    json::Object o;
    o["name"] = name;
    o["tags"] = std::move(tags);
    http::Response r;
    r.body = json::serialize(o);
    r.headers.emplace_back("Docker-Distribution-API-Version", "registry/2.0");
    return res.send(std::move(r));
  }
  if (!split_registry_path(req.path, &name, &kind, &ref)) {
    return res.send(registry_error(404, "NAME_UNKNOWN", "no such endpoint: " + req.path));
  }
  bool head = req.method == "HEAD";
  if (kind == "manifests") {
    bool by_digest = ref.rfind("sha256:", 0) == 0;
    auto desc = store.resolve(name + (by_digest ? "@" : ":") + ref);
    if (!desc) {
      return res.send(
          registry_error(404, "MANIFEST_UNKNOWN", "manifest " + name + ":" + ref + " unknown"));
    }
    auto body = store.read_blob(desc->digest);
    // By digest, any stored blob would resolve: only a manifest is one.
    auto parsed = body ? parse_manifest(*body) : Result<Manifest>(body.error());
    if (!parsed) {
      return res.send(
          registry_error(404, "MANIFEST_UNKNOWN", "manifest " + name + ":" + ref + " unknown"));
    }
    http::Response r;
    r.content_type = parsed->media_type.empty() ? std::string(kMediaManifest) : parsed->media_type;
    r.headers.emplace_back("Docker-Content-Digest", desc->digest);
    r.headers.emplace_back("Docker-Distribution-API-Version", "registry/2.0");
    r.body = std::move(*body);
    return res.send(std::move(r));
  }
  if (!valid_digest(ref)) {
    return res.send(registry_error(400, "DIGEST_INVALID", "'" + ref + "' is not a sha256 digest"));
  }
  auto fd = store.open_blob(ref);
  if (!fd) return res.send(registry_error(404, "BLOB_UNKNOWN", "blob " + ref + " unknown"));
  off_t size = ::lseek(fd->get(), 0, SEEK_END);
  if (size < 0 || ::lseek(fd->get(), 0, SEEK_SET) != 0) {
    return res.send(registry_error(500, "UNKNOWN", "seek " + ref));
  }
  http::Headers headers = {{"Docker-Content-Digest", ref},
                           {"Docker-Distribution-API-Version", "registry/2.0"}};
  http::Response r;
  r.content_type = "application/octet-stream";
  r.headers = headers;
  if (head) {
    r.body.assign(static_cast<size_t>(size), '\0');  // for Content-Length; not sent
    return res.send(std::move(r));
  }
  if (static_cast<size_t>(size) <= kChunk * 4) {
    auto data = read_small_file(fd->get(), kChunk * 4, ref);
    if (!data) return res.send(registry_error(500, "UNKNOWN", data.error().message));
    r.body = std::move(*data);
    return res.send(std::move(r));
  }
  // Large blobs: chunked, read by the calling thread in pieces.
  res.start_stream(200, "application/octet-stream", std::move(headers));
  std::string buf(kChunk, '\0');
  for (;;) {
    ssize_t n = ::read(fd->get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || res.closed()) break;
    res.write(buf.substr(0, static_cast<size_t>(n)));
  }
  res.finish();
}

}  // namespace qufop::builder
