#include "builder/puller.h"

#include <unistd.h>

#include <atomic>
#include <mutex>
#include <set>
#include <system_error>

#include "builder/layer.h"
#include "common/http_client.h"

namespace qufop::builder {

namespace fs = std::filesystem;

namespace {

std::mutex g_unpack_mu;  // one unpack at a time per process: unpacks are disk-bound anyway
std::atomic<uint64_t> g_tmp_counter{0};

const char* kAccept =
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json";

}  // namespace

Result<std::string> cached_layer(const OciStore& store, const fs::path& cache_dir,
                                 std::string_view digest) {
  if (!valid_digest(digest)) return Error::invalid("layer digest '" + std::string(digest) + "'");
  std::string hex(digest.substr(7));
  std::string dir = (cache_dir / hex).string();
  std::lock_guard lock(g_unpack_mu);
  if (fs::is_directory(dir)) return dir;
  std::error_code ec;
  fs::create_directories(cache_dir, ec);
  if (ec) return Error::io("mkdir " + cache_dir.string() + ": " + ec.message());
  std::string tmp = (cache_dir / (".tmp-" + hex + "-" + std::to_string(::getpid()) + "-" +
                                  std::to_string(++g_tmp_counter)))
                        .string();
  auto stats = unpack_layer(store, digest, tmp, layer_extract_options(Whiteouts::kOverlay));
  if (!stats) {
    fs::remove_all(tmp, ec);
    return stats.error().wrap("unpack layer " + std::string(digest));
  }
  if (::rename(tmp.c_str(), dir.c_str()) != 0) {
    int err = errno;
    fs::remove_all(tmp, ec);
    // Another process unpacked the same layer meanwhile: theirs is as good.
    if ((err == ENOTEMPTY || err == EEXIST) && fs::is_directory(dir)) return dir;
    return Error::sys("rename(" + tmp + ")", err);
  }
  (void)fsync_dir(cache_dir.string());
  return dir;
}

Result<LayerGcStats> gc_layer_cache(const OciStore& store, const fs::path& cache_dir) {
  auto images = store.list();
  if (!images) return images.error();
  std::set<std::string> used;
  for (const auto& image : *images) {
    auto m = store.read_manifest(image.manifest.digest);
    if (!m) return m.error().wrap("manifest of " + image.name + ":" + image.tag);
    for (const auto& l : m->layers) used.insert(l.digest.substr(7));
  }
  LayerGcStats stats;
  std::lock_guard lock(g_unpack_mu);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(cache_dir, ec)) {
    std::string name = e.path().filename().string();
    bool stale_tmp = name.rfind(".tmp-", 0) == 0;  // under the lock: no unpack of ours runs
    if (!stale_tmp && used.count(name)) {
      ++stats.kept;
      continue;
    }
    std::error_code rec;
    fs::remove_all(e.path(), rec);
    if (rec) return Error::io("remove " + e.path().string() + ": " + rec.message());
    ++stats.removed;
  }
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return Error::io("list " + cache_dir.string() + ": " + ec.message());
  }
  return stats;
}

Puller::Puller(const OciStore& store, fs::path cache_dir, PullOptions options)
    : store_(store), cache_dir_(std::move(cache_dir)), options_(options) {}

Result<bool> Puller::fetch_blob(const HostPort& registry, std::string_view name,
                                std::string_view digest) {
  if (!valid_digest(digest)) return Error::invalid("blob digest '" + std::string(digest) + "'");
  if (store_.has_blob(digest)) return false;
  auto writer = store_.begin_blob();
  if (!writer) return writer.error();
  http::ClientOptions co;
  co.request_timeout = options_.timeout;
  http::Client client(registry.host, registry.port, co);
  http::Request req;
  req.method = "GET";
  req.target = "/v2/" + std::string(name) + "/blobs/" + std::string(digest);
  Result<void> written = ok();
  std::string error_body;
  auto status = client.stream(
      req,
      [&](std::string_view data) {
        if (error_body.size() < 4096) error_body.append(data.substr(0, 4096));
        written = writer->write(data);
        return written.ok();
      },
      options_.timeout);
  if (!status) return status.error().wrap("fetch blob " + std::string(digest));
  if (*status != 200) {
    return Error{"not_found",
                 "fetch blob " + std::string(digest) + ": HTTP " + std::to_string(*status) + ": " +
                     error_body.substr(0, 512),
                 0};
  }
  if (!written) return written.error().wrap("store blob " + std::string(digest));
  auto committed = writer->commit(digest);
  if (!committed) return committed.error().wrap("blob from " + registry.str());
  return true;
}

Result<PulledImage> Puller::pull(const HostPort& registry, std::string_view name,
                                 std::string_view reference) {
  bool by_digest = reference.rfind("sha256:", 0) == 0;
  if (by_digest && !valid_digest(reference)) {
    return Error::invalid("reference '" + std::string(reference) + "' is not a sha256 digest");
  }
  std::string what = std::string(name) + (by_digest ? "@" : ":") + std::string(reference);
  http::ClientOptions co;
  co.request_timeout = options_.timeout;
  co.max_body_bytes = options_.max_manifest_bytes;
  http::Client client(registry.host, registry.port, co);
  http::Request req;
  req.method = "GET";
  req.target = "/v2/" + std::string(name) + "/manifests/" + std::string(reference);
  req.headers = {{"Accept", kAccept}};
  auto res = client.send(req);
  if (!res) return res.error().wrap("pull " + what + " from " + registry.str());
  if (res->status != 200) {
    return Error{"not_found",
                 "pull " + what + " from " + registry.str() + ": HTTP " +
                     std::to_string(res->status) + ": " + res->body.substr(0, 512),
                 0};
  }
  std::string digest = sha256_digest(res->body);
  if (by_digest && digest != reference) {
    return Error::invalid("pull " + what + ": manifest digest mismatch: got " + digest);
  }
  if (auto h = res->header("Docker-Content-Digest"); !h.empty() && h != digest) {
    return Error::invalid("pull " + what + ": manifest digest mismatch: the registry says " +
                          std::string(h) + ", the body is " + digest);
  }
  auto parsed = parse_manifest(res->body);
  if (!parsed) return parsed.error().wrap("pull " + what + ": manifest");
  PulledImage image;
  image.parsed = std::move(*parsed);
  // Config and layers first, verified; the manifest only once they are all there.
  std::vector<std::string> blobs = {image.parsed.config.digest};
  for (const auto& l : image.parsed.layers) blobs.push_back(l.digest);
  for (const auto& b : blobs) {
    auto fetched = fetch_blob(registry, name, b);
    if (!fetched) return fetched.error().wrap("pull " + what);
    if (*fetched) ++image.blobs_fetched;
  }
  auto stored = store_.put_blob_bytes(res->body);
  if (!stored) return stored.error().wrap("pull " + what + ": store manifest");
  image.manifest = *stored;
  image.manifest.media_type =
      image.parsed.media_type.empty() ? std::string(kMediaManifest) : image.parsed.media_type;
  auto config = store_.read_config(image.parsed.config.digest);
  if (!config) return config.error().wrap("pull " + what + ": config");
  image.config = std::move(*config);
  for (auto it = image.parsed.layers.rbegin(); it != image.parsed.layers.rend(); ++it) {
    auto dir = cached_layer(store_, cache_dir_, it->digest);
    if (!dir) return dir.error().wrap("pull " + what);
    image.layer_dirs.push_back(*dir);
  }
  std::string tag =
      by_digest ? "sha256-" + std::string(reference.substr(7)) : std::string(reference);
  if (auto r = store_.tag(name, tag, image.manifest); !r) {
    return r.error().wrap("pull " + what + ": tag");
  }
  return image;
}

}  // namespace qufop::builder
