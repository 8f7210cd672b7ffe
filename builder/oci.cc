#include "builder/oci.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <set>

namespace qufop::builder {
namespace fs = std::filesystem;

// ---- digests -------------------------------------------------------------------------------

struct Sha256::Ctx {
  EVP_MD_CTX* md = nullptr;
  ~Ctx() { EVP_MD_CTX_free(md); }
};

Sha256::Sha256() : ctx_(std::make_unique<Ctx>()) {
  ctx_->md = EVP_MD_CTX_new();
  // Allocation failure of a few bytes or a missing sha256 in libcrypto: nothing to recover.
  if (ctx_->md == nullptr || EVP_DigestInit_ex(ctx_->md, EVP_sha256(), nullptr) != 1) {
    std::abort();
  }
}

Sha256::~Sha256() = default;

void Sha256::update(std::string_view data) {
  if (EVP_DigestUpdate(ctx_->md, data.data(), data.size()) != 1) std::abort();
}

std::string Sha256::digest() {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx_->md, out, &len) != 1) std::abort();
  static const char* kHex = "0123456789abcdef";
  std::string s = "sha256:";
  for (unsigned i = 0; i < len; ++i) {
    s += kHex[out[i] >> 4];
    s += kHex[out[i] & 15];
  }
  return s;
}

std::string sha256_digest(std::string_view data) {
  Sha256 h;
  h.update(data);
  return h.digest();
}

bool valid_digest(std::string_view d) {
  if (d.size() != 71 || d.substr(0, 7) != "sha256:") return false;
  return std::all_of(d.begin() + 7, d.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string host_architecture() {
#if defined(__x86_64__)
  return "amd64";
#elif defined(__aarch64__)
  return "arm64";
#elif defined(__arm__)
  return "arm";
#elif defined(__i386__)
  return "386";
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  return "ppc64le";
#elif defined(__s390x__)
  return "s390x";
#elif defined(__riscv) && __riscv_xlen == 64
  return "riscv64";
#else
  return "unknown";
#endif
}

// ---- JSON ----------------------------------------------------------------------------------

namespace {

json::Value sorted(const json::Value& v) {
  if (v.is_object()) {
    std::vector<std::pair<std::string_view, const json::Value*>> items;
    for (const auto& kv : v.get_object()) items.emplace_back(kv.key(), &kv.value());
    std::sort(items.begin(), items.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    json::Object o;
    for (const auto& [k, val] : items) o.emplace(k, sorted(*val));
    return o;
  }
  if (v.is_array()) {
    json::Array a;
    for (const auto& x : v.get_array()) a.push_back(sorted(x));
    return a;
  }
  return v;
}

json::Array strings(const std::vector<std::string>& v) {
  json::Array a;
  for (const auto& s : v) a.emplace_back(s);
  return a;
}

json::Object string_map(const std::map<std::string, std::string>& m) {
  json::Object o;
  for (const auto& [k, v] : m) o.emplace(k, v);
  return o;
}

json::Object descriptor_json(const BlobRef& b) {
  json::Object o{{"mediaType", b.media_type}, {"digest", b.digest}, {"size", b.size}};
  if (!b.annotations.empty()) o.emplace("annotations", string_map(b.annotations));
  return o;
}

Result<std::vector<std::string>> string_list(const json::Object& o, std::string_view field) {
  std::vector<std::string> out;
  const json::Value* v = o.if_contains(field);
  if (v == nullptr || v->is_null()) return out;
  if (!v->is_array()) return Error::invalid("field '" + std::string(field) + "': expected a list");
  for (const auto& x : v->get_array()) {
    if (!x.is_string()) {
      return Error::invalid("field '" + std::string(field) + "': expected a list of strings");
    }
    out.emplace_back(x.get_string());
  }
  return out;
}

Result<std::map<std::string, std::string>> string_map_field(const json::Object& o,
                                                            std::string_view field) {
  std::map<std::string, std::string> out;
  const json::Value* v = o.if_contains(field);
  if (v == nullptr || v->is_null()) return out;
  if (!v->is_object()) {
    return Error::invalid("field '" + std::string(field) + "': expected an object");
  }
  for (const auto& kv : v->get_object()) {
    if (!kv.value().is_string()) {
      return Error::invalid("field '" + std::string(field) + "." + std::string(kv.key()) +
                            "': expected a string");
    }
    out.emplace(std::string(kv.key()), std::string(kv.value().get_string()));
  }
  return out;
}

std::string optional_string(const json::Object& o, std::string_view field) {
  const json::Value* v = o.if_contains(field);
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

Result<BlobRef> parse_descriptor(const json::Value& v, std::string_view what) {
  auto o = json::get_object(v, what);
  if (!o) return o.error();
  BlobRef b;
  auto mt = json::get_string(**o, "mediaType");
  auto digest = json::get_string(**o, "digest");
  auto size = json::get_int(**o, "size");
  if (!mt) return mt.error().wrap(what);
  if (!digest) return digest.error().wrap(what);
  if (!size) return size.error().wrap(what);
  if (!valid_digest(*digest)) {
    return Error::invalid(std::string(what) + ": digest '" + *digest + "' is not sha256:<64 hex>");
  }
  if (*size < 0) return Error::invalid(std::string(what) + ": negative size");
  auto ann = string_map_field(**o, "annotations");
  if (!ann) return ann.error().wrap(what);
  b.media_type = std::move(*mt);
  b.digest = std::move(*digest);
  b.size = *size;
  b.annotations = std::move(*ann);
  return b;
}

}  // namespace

std::string canonical_json(const json::Value& value) { return json::serialize(sorted(value)); }

bool is_index_media_type(std::string_view mt) {
  return mt == kMediaIndex || mt == kMediaDockerManifestList;
}

std::string manifest_json(const Manifest& m) {
  json::Array layers;
  for (const auto& l : m.layers) layers.push_back(descriptor_json(l));
  json::Object o{{"schemaVersion", 2},
                 {"mediaType", m.media_type},
                 {"config", descriptor_json(m.config)},
                 {"layers", std::move(layers)}};
  if (!m.annotations.empty()) o.emplace("annotations", string_map(m.annotations));
  return canonical_json(o);
}

std::string config_json(const ImageConfig& c) {
  json::Object cfg;
  if (!c.user.empty()) cfg.emplace("User", c.user);
  if (!c.env.empty()) cfg.emplace("Env", strings(c.env));
  if (!c.entrypoint.empty()) cfg.emplace("Entrypoint", strings(c.entrypoint));
  if (!c.cmd.empty()) cfg.emplace("Cmd", strings(c.cmd));
  if (!c.working_dir.empty()) cfg.emplace("WorkingDir", c.working_dir);
  if (!c.exposed_ports.empty()) {
    json::Object ports;
    for (const auto& p : c.exposed_ports) ports.emplace(p, json::Object{});
    cfg.emplace("ExposedPorts", std::move(ports));
  }
  if (!c.labels.empty()) cfg.emplace("Labels", string_map(c.labels));
  if (!c.stop_signal.empty()) cfg.emplace("StopSignal", c.stop_signal);
  json::Object o{{"architecture", c.architecture.empty() ? host_architecture() : c.architecture},
                 {"os", c.os},
                 {"config", std::move(cfg)},
                 {"rootfs", json::Object{{"type", "layers"}, {"diff_ids", strings(c.diff_ids)}}}};
  return canonical_json(o);
}

Result<Manifest> parse_manifest(std::string_view text) {
  auto v = json::parse(text);
  if (!v) return v.error().wrap("manifest");
  auto o = json::get_object(*v, "manifest");
  if (!o) return o.error();
  auto version = json::get_int(**o, "schemaVersion");
  if (!version || *version != 2) {
    return Error::invalid("manifest: schemaVersion is not 2 (not an OCI or Docker v2 manifest)");
  }
  Manifest m;
  m.media_type = optional_string(**o, "mediaType");
  if (m.media_type.empty()) m.media_type = std::string(kMediaManifest);
  if (is_index_media_type(m.media_type)) {
    return Error::invalid("manifest: is an image index (" + m.media_type + "), not a manifest");
  }
  const json::Value* config = (*o)->if_contains("config");
  if (config == nullptr) return Error::invalid("manifest: field 'config' is missing");
  auto c = parse_descriptor(*config, "manifest config");
  if (!c) return c.error();
  m.config = std::move(*c);
  const json::Value* layers = (*o)->if_contains("layers");
  if (layers == nullptr || !layers->is_array()) {
    return Error::invalid("manifest: field 'layers': expected a list");
  }
  for (size_t i = 0; i < layers->get_array().size(); ++i) {
    auto l = parse_descriptor(layers->get_array()[i], "manifest layer " + std::to_string(i + 1));
    if (!l) return l.error();
    m.layers.push_back(std::move(*l));
  }
  auto ann = string_map_field(**o, "annotations");
  if (!ann) return ann.error().wrap("manifest");
  m.annotations = std::move(*ann);
  return m;
}

Result<ImageConfig> parse_config(std::string_view text) {
  auto v = json::parse(text);
  if (!v) return v.error().wrap("image config");
  auto o = json::get_object(*v, "image config");
  if (!o) return o.error();
  ImageConfig c;
  c.architecture = optional_string(**o, "architecture");
  c.os = optional_string(**o, "os");
  if (const json::Value* cfg = (*o)->if_contains("config"); cfg && cfg->is_object()) {
    const json::Object& co = cfg->get_object();
    c.user = optional_string(co, "User");
    c.working_dir = optional_string(co, "WorkingDir");
    c.stop_signal = optional_string(co, "StopSignal");
    auto env = string_list(co, "Env");
    auto ep = string_list(co, "Entrypoint");
    auto cmd = string_list(co, "Cmd");
    auto labels = string_map_field(co, "Labels");
    if (!env) return env.error().wrap("image config");
    if (!ep) return ep.error().wrap("image config");
    if (!cmd) return cmd.error().wrap("image config");
    if (!labels) return labels.error().wrap("image config");
    c.env = std::move(*env);
    c.entrypoint = std::move(*ep);
    c.cmd = std::move(*cmd);
    c.labels = std::move(*labels);
    if (const json::Value* ports = co.if_contains("ExposedPorts"); ports && ports->is_object()) {
      for (const auto& kv : ports->get_object()) c.exposed_ports.emplace_back(kv.key());
      std::sort(c.exposed_ports.begin(), c.exposed_ports.end());
    }
  }
  const json::Value* rootfs = (*o)->if_contains("rootfs");
  if (rootfs == nullptr || !rootfs->is_object()) {
    return Error::invalid("image config: field 'rootfs' is missing");
  }
  auto diff_ids = string_list(rootfs->get_object(), "diff_ids");
  if (!diff_ids) return diff_ids.error().wrap("image config rootfs");
  for (const auto& d : *diff_ids) {
    if (!valid_digest(d)) return Error::invalid("image config: diff_id '" + d + "' is not valid");
  }
  c.diff_ids = std::move(*diff_ids);
  return c;
}

// ---- blobs ---------------------------------------------------------------------------------

BlobWriter::BlobWriter(std::string blobs_dir, std::string tmp_path, Fd fd)
    : blobs_dir_(std::move(blobs_dir)),
      tmp_path_(std::move(tmp_path)),
      fd_(std::move(fd)),
      hash_(std::make_unique<Sha256>()) {}

BlobWriter::BlobWriter(BlobWriter&& o) noexcept
    : blobs_dir_(std::move(o.blobs_dir_)),
      tmp_path_(std::move(o.tmp_path_)),
      fd_(std::move(o.fd_)),
      hash_(std::move(o.hash_)),
      size_(o.size_),
      done_(std::exchange(o.done_, true)) {}

BlobWriter::~BlobWriter() {
  if (!done_ && !tmp_path_.empty()) ::unlink(tmp_path_.c_str());
}

Result<void> BlobWriter::write(std::string_view data) {
  if (done_) return Error{"internal", "write to a committed blob", 0};
  QF_TRY(write_all(fd_.get(), data, tmp_path_));
  hash_->update(data);
  size_ += data.size();
  return ok();
}

Result<BlobRef> BlobWriter::commit(std::string_view expected) {
  if (done_) return Error{"internal", "blob committed twice", 0};
  std::string digest = hash_->digest();
  if (!expected.empty() && digest != expected) {
    // The temp file goes with the destructor; nothing became visible.
    return Error::invalid("blob digest mismatch: expected " + std::string(expected) + ", got " +
                          digest + " (" + std::to_string(size_) + " bytes)");
  }
  if (::fchmod(fd_.get(), 0644) != 0) return Error::sys("chmod(" + tmp_path_ + ")", errno);
  if (::fsync(fd_.get()) != 0) return Error::sys("fsync(" + tmp_path_ + ")", errno);
  fd_.reset();
  std::string final_path = blobs_dir_ + "/" + digest.substr(7);
  if (::rename(tmp_path_.c_str(), final_path.c_str()) != 0) {
    return Error::sys("rename(" + tmp_path_ + ", " + final_path + ")", errno);
  }
  done_ = true;
  QF_TRY(fsync_dir(blobs_dir_));
  BlobRef b;
  b.digest = std::move(digest);
  b.size = static_cast<int64_t>(size_);
  return b;
}

// ---- the store -----------------------------------------------------------------------------

namespace {

constexpr std::string_view kLayoutFile = R"({"imageLayoutVersion":"1.0.0"})";

Result<void> write_file_atomically(const fs::path& dir_tmp, const fs::path& target,
                                   std::string_view data) {
  std::string templ = (dir_tmp / (target.filename().string() + ".XXXXXX")).string();
  Fd fd(::mkstemp(templ.data()));
  if (!fd.valid()) return Error::sys("mkstemp(" + templ + ")", errno);
  auto fail = [&](Error e) {
    ::unlink(templ.c_str());
    return e;
  };
  if (auto r = write_all(fd.get(), data, templ); !r) return fail(r.error());
  if (::fchmod(fd.get(), 0644) != 0) return fail(Error::sys("chmod(" + templ + ")", errno));
  if (::fsync(fd.get()) != 0) return fail(Error::sys("fsync(" + templ + ")", errno));
  fd.reset();
  if (::rename(templ.c_str(), target.c_str()) != 0) {
    return fail(Error::sys("rename(" + templ + ", " + target.string() + ")", errno));
  }
  return fsync_dir(target.parent_path().string());
}

Result<void> make_dir(const fs::path& p) {
  if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST) {
    return Error::sys("mkdir(" + p.string() + ")", errno);
  }
  return ok();
}

// NAME as in the distribution spec: lowercase components separated by '/'; TAG: [\w][\w.-]*.
bool valid_name(std::string_view n) {
  if (n.empty() || n.size() > 255 || n.front() == '/' || n.back() == '/') return false;
  for (char c : n) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-' || c == '/' || c == ':';
    if (!ok) return false;
  }
  return n.find("//") == std::string_view::npos;
}

bool valid_tag(std::string_view t) {
  if (t.empty() || t.size() > 128 || t.front() == '.' || t.front() == '-') return false;
  return std::all_of(t.begin(), t.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
}

std::string ref_name_of(const BlobRef& b) {
  auto it = b.annotations.find(std::string(kAnnotationRefName));
  return it == b.annotations.end() ? std::string() : it->second;
}

}  // namespace

Result<OciStore> OciStore::open(const fs::path& root) {
  QF_TRY(make_dir(root));
  QF_TRY(make_dir(root / "blobs"));
  QF_TRY(make_dir(root / "blobs" / "sha256"));
  QF_TRY(make_dir(root / ".tmp"));
  OciStore store(root);
  fs::path layout = root / "oci-layout";
  Fd fd(::open(layout.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.valid()) {
    auto text = read_small_file(fd.get(), 4096, layout.string());
    if (!text) return text.error();
    auto v = json::parse(*text);
    const json::Object* o = v && v->is_object() ? &v->get_object() : nullptr;
    auto version = o ? json::get_string(*o, "imageLayoutVersion") : Result<std::string>("");
    if (!version || version->empty() || version->front() != '1') {
      return Error::invalid(layout.string() +
                            ": not an OCI image layout of version 1.x (imageLayoutVersion)");
    }
  } else if (errno == ENOENT) {
    QF_TRY(write_file_atomically(root / ".tmp", layout, kLayoutFile));
  } else {
    return Error::sys("open(" + layout.string() + ")", errno);
  }
  if (::access((root / "index.json").c_str(), F_OK) != 0) {
    QF_TRY(store.write_index({}));
  }
  return store;
}

fs::path OciStore::blob_path(std::string_view digest) const {
  if (!valid_digest(digest)) std::abort();  // invariant: callers validate digests first
  return root_ / "blobs" / "sha256" / std::string(digest.substr(7));
}

Result<BlobWriter> OciStore::begin_blob() const {
  std::string templ = (root_ / ".tmp" / "blob.XXXXXX").string();
  Fd fd(::mkostemp(templ.data(), O_CLOEXEC));
  if (!fd.valid()) return Error::sys("mkstemp(" + templ + ")", errno);
  return BlobWriter((root_ / "blobs" / "sha256").string(), templ, std::move(fd));
}

Result<BlobRef> OciStore::put_blob(const ReadFn& read, std::string_view expected) const {
  if (!expected.empty() && !valid_digest(expected)) {
    return Error::invalid("digest '" + std::string(expected) + "' is not sha256:<64 hex>");
  }
  auto w = begin_blob();
  if (!w) return w.error();
  std::vector<char> buf(256 << 10);
  for (;;) {
    auto n = read(buf.data(), buf.size());
    if (!n) return n.error();
    if (*n == 0) break;
    QF_TRY(w->write(std::string_view(buf.data(), *n)));
  }
  return w->commit(expected);
}

Result<BlobRef> OciStore::put_blob_bytes(std::string_view data) const {
  auto w = begin_blob();
  if (!w) return w.error();
  QF_TRY(w->write(data));
  return w->commit();
}

bool OciStore::has_blob(std::string_view digest) const {
  if (!valid_digest(digest)) return false;
  struct stat st;
  return ::stat(blob_path(digest).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

Result<Fd> OciStore::open_blob(std::string_view digest) const {
  if (!valid_digest(digest)) {
    return Error::invalid("digest '" + std::string(digest) + "' is not sha256:<64 hex>");
  }
  fs::path p = blob_path(digest);
  Fd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT)
      return Error{"not_found", "blob " + std::string(digest) + " is not in the store", ENOENT};
    return Error::sys("open(" + p.string() + ")", errno);
  }
  return fd;
}

Result<std::string> OciStore::read_blob(std::string_view digest, size_t max_bytes) const {
  auto fd = open_blob(digest);
  if (!fd) return fd.error();
  auto text = read_small_file(fd->get(), max_bytes, blob_path(digest).string());
  if (!text) return text.error();
  if (sha256_digest(*text) != digest) {
    return Error::invalid("blob " + std::string(digest) + " is corrupt: its content has digest " +
                          sha256_digest(*text));
  }
  return text;
}

Result<void> OciStore::verify_blob(std::string_view digest) const {
  auto fd = open_blob(digest);
  if (!fd) return fd.error();
  Sha256 h;
  std::vector<char> buf(256 << 10);
  for (;;) {
    ssize_t n = ::read(fd->get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::sys("read(" + blob_path(digest).string() + ")", errno);
    if (n == 0) break;
    h.update(std::string_view(buf.data(), static_cast<size_t>(n)));
  }
  std::string got = h.digest();
  if (got != digest) {
    return Error::invalid("blob " + std::string(digest) + " is corrupt: its content has digest " +
                          got);
  }
  return ok();
}

Result<BlobRef> OciStore::put_config(const ImageConfig& config) const {
  auto b = put_blob_bytes(config_json(config));
  if (!b) return b;
  b->media_type = std::string(kMediaConfig);
  return b;
}

Result<BlobRef> OciStore::put_manifest(const Manifest& manifest) const {
  if (!has_blob(manifest.config.digest)) {
    return Error{"not_found", "manifest: config " + manifest.config.digest + " is not stored", 0};
  }
  for (const auto& l : manifest.layers) {
    if (!has_blob(l.digest)) {
      return Error{"not_found", "manifest: layer " + l.digest + " is not stored", 0};
    }
  }
  auto b = put_blob_bytes(manifest_json(manifest));
  if (!b) return b;
  b->media_type = manifest.media_type;
  return b;
}

Result<Manifest> OciStore::read_manifest(std::string_view digest) const {
  auto text = read_blob(digest);
  if (!text) return text.error();
  return parse_manifest(*text);
}

Result<ImageConfig> OciStore::read_config(std::string_view digest) const {
  auto text = read_blob(digest);
  if (!text) return text.error();
  return parse_config(*text);
}

Result<std::vector<BlobRef>> OciStore::read_index() const {
  fs::path p = root_ / "index.json";
  Fd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Error::sys("open(" + p.string() + ")", errno);
  auto text = read_small_file(fd.get(), 64 << 20, p.string());
  if (!text) return text.error();
  auto v = json::parse(*text);
  if (!v) return v.error().wrap(p.string());
  auto o = json::get_object(*v, p.string());
  if (!o) return o.error();
  std::vector<BlobRef> out;
  const json::Value* list = (*o)->if_contains("manifests");
  if (list == nullptr) return out;
  if (!list->is_array()) return Error::invalid(p.string() + ": 'manifests' is not a list");
  for (const auto& m : list->get_array()) {
    auto b = parse_descriptor(m, p.string() + " manifest");
    if (!b) return b.error();
    out.push_back(std::move(*b));
  }
  return out;
}

Result<void> OciStore::write_index(std::vector<BlobRef> entries) const {
  std::stable_sort(entries.begin(), entries.end(), [](const BlobRef& a, const BlobRef& b) {
    return ref_name_of(a) < ref_name_of(b);
  });
  json::Array list;
  for (const auto& e : entries) list.push_back(descriptor_json(e));
  json::Object o{{"schemaVersion", 2}, {"mediaType", kMediaIndex}, {"manifests", list}};
  return write_file_atomically(root_ / ".tmp", root_ / "index.json", canonical_json(o));
}

Result<Fd> OciStore::lock() const {
  fs::path p = root_ / ".lock";
  Fd fd(::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!fd.valid()) return Error::sys("open(" + p.string() + ")", errno);
  while (::flock(fd.get(), LOCK_EX) != 0) {
    if (errno != EINTR) return Error::sys("flock(" + p.string() + ")", errno);
  }
  return fd;
}

Result<void> OciStore::tag(std::string_view name, std::string_view tag,
                           const BlobRef& manifest) const {
  if (!valid_name(name)) {
    return Error::invalid("image name '" + std::string(name) +
                          "' is not a name (lowercase letters, digits, '.', '_', '-', '/')");
  }
  if (!valid_tag(tag)) {
    return Error::invalid("tag '" + std::string(tag) +
                          "' is not a tag (letters, digits, '_', '.', '-'; at most 128)");
  }
  if (!has_blob(manifest.digest)) {
    return Error{"not_found", "manifest " + manifest.digest + " is not stored", 0};
  }
  auto guard = lock();
  if (!guard) return guard.error();
  auto entries = read_index();
  if (!entries) return entries.error();
  std::string ref = std::string(name) + ":" + std::string(tag);
  std::erase_if(*entries, [&](const BlobRef& b) { return ref_name_of(b) == ref; });
  BlobRef entry = manifest;
  if (entry.media_type.empty()) entry.media_type = std::string(kMediaManifest);
  entry.annotations[std::string(kAnnotationRefName)] = ref;
  entries->push_back(std::move(entry));
  return write_index(std::move(*entries));
}

Result<void> OciStore::untag(std::string_view name, std::string_view tag) const {
  auto guard = lock();
  if (!guard) return guard.error();
  auto entries = read_index();
  if (!entries) return entries.error();
  std::string ref = std::string(name) + ":" + std::string(tag);
  size_t removed = std::erase_if(*entries, [&](const BlobRef& b) { return ref_name_of(b) == ref; });
  if (removed == 0) return Error{"not_found", "no image " + ref + " in the store", 0};
  return write_index(std::move(*entries));
}

Result<BlobRef> OciStore::resolve(std::string_view ref) const {
  auto entries = read_index();
  if (!entries) return entries.error();
  if (auto at = ref.find('@'); at != std::string_view::npos) {
    std::string_view digest = ref.substr(at + 1);
    if (!valid_digest(digest)) {
      return Error::invalid("digest '" + std::string(digest) + "' is not sha256:<64 hex>");
    }
    for (const auto& e : *entries) {
      if (e.digest == digest) {
        BlobRef b = e;
        b.annotations.clear();
        return b;
      }
    }
    struct stat st;
    if (!valid_digest(digest) || ::stat(blob_path(digest).c_str(), &st) != 0) {
      return Error{"not_found", "no image " + std::string(ref) + " in the store", 0};
    }
    return BlobRef{std::string(kMediaManifest), std::string(digest), st.st_size, {}};
  }
  std::string full(ref);
  size_t slash = full.rfind('/');
  size_t colon = full.rfind(':');
  if (colon == std::string::npos || (slash != std::string::npos && colon < slash)) {
    full += ":latest";
  }
  for (const auto& e : *entries) {
    if (ref_name_of(e) == full) {
      BlobRef b = e;
      b.annotations.clear();
      return b;
    }
  }
  return Error{"not_found", "no image " + full + " in the store (import or build it first)", 0};
}

Result<std::vector<TaggedImage>> OciStore::list() const {
  auto entries = read_index();
  if (!entries) return entries.error();
  std::vector<TaggedImage> out;
  for (const auto& e : *entries) {
    TaggedImage t;
    std::string ref = ref_name_of(e);
    size_t slash = ref.rfind('/');
    size_t colon = ref.rfind(':');
    if (colon != std::string::npos && (slash == std::string::npos || colon > slash)) {
      t.name = ref.substr(0, colon);
      t.tag = ref.substr(colon + 1);
    } else {
      t.name = ref;
    }
    t.manifest = e;
    t.manifest.annotations.clear();
    out.push_back(std::move(t));
  }
  return out;
}

Result<GcStats> OciStore::gc(const GcOptions& options) const {
  auto guard = lock();
  if (!guard) return guard.error();
  auto entries = read_index();
  if (!entries) return entries.error();
  // Mark: everything reachable from index.json. An unreadable manifest stops the collection:
  // without it we cannot know what it holds, and removing too much is worse than too little.
  std::set<std::string> live;
  std::vector<BlobRef> todo = *entries;
  while (!todo.empty()) {
    BlobRef b = std::move(todo.back());
    todo.pop_back();
    if (!live.insert(b.digest).second) continue;
    bool is_manifest = b.media_type == kMediaManifest || b.media_type == kMediaDockerManifest;
    if (!is_manifest && !is_index_media_type(b.media_type)) continue;
    if (!has_blob(b.digest)) continue;  // dangling reference: nothing below it is known
    auto text = read_blob(b.digest);
    if (!text) return text.error().wrap("gc: nothing removed");
    if (is_manifest) {
      auto m = parse_manifest(*text);
      if (!m) return m.error().wrap("gc: manifest " + b.digest + ": nothing removed");
      todo.push_back(m->config);
      for (auto& l : m->layers) todo.push_back(std::move(l));
    } else {
      auto v = json::parse(*text);
      const json::Value* list =
          v && v->is_object() ? v->get_object().if_contains("manifests") : nullptr;
      if (list == nullptr || !list->is_array()) {
        return Error::invalid("gc: index " + b.digest + " is malformed: nothing removed");
      }
      for (const auto& x : list->get_array()) {
        auto child = parse_descriptor(x, "gc: index " + b.digest);
        if (!child) return child.error();
        todo.push_back(std::move(*child));
      }
    }
  }
  // Sweep.
  GcStats stats;
  const time_t cutoff = ::time(nullptr) - options.min_age.count();
  auto sweep = [&](const fs::path& dir, bool blobs) -> Result<void> {
    std::error_code ec;
    for (const auto& ent : fs::directory_iterator(dir, ec)) {
      std::string name = ent.path().filename().string();
      struct stat st;
      if (::lstat(ent.path().c_str(), &st) != 0) continue;
      if (blobs && live.count("sha256:" + name)) {
        ++stats.blobs_kept;
        continue;
      }
      if (st.st_mtime > cutoff) {
        if (blobs) ++stats.blobs_kept;
        continue;
      }
      if (::unlink(ent.path().c_str()) != 0) {
        return Error::sys("unlink(" + ent.path().string() + ")", errno);
      }
      if (blobs) {
        ++stats.blobs_removed;
        stats.bytes_removed += static_cast<uint64_t>(st.st_size);
      }
    }
    if (ec) return Error::sys("readdir(" + dir.string() + ")", ec.value());
    return ok();
  };
  QF_TRY(sweep(root_ / "blobs" / "sha256", true));
  QF_TRY(sweep(root_ / ".tmp", false));
  return stats;
}

}  // namespace qufop::builder
