// The image store: an OCI image layout on disk (`oci-layout`, `index.json`, `blobs/sha256/…`)
// that skopeo and umoci read as is. Blobs are content-addressed (sha256, OpenSSL EVP, streamed)
// and written to a temp file that is renamed into place only once complete and verified, so a
// half-written blob is never visible; index.json is replaced atomically. Manifests and configs
// follow the OCI image spec and are serialised canonically (sorted keys, no blanks), so
// identical inputs give identical digests.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "builder/fsutil.h"
#include "common/json.h"
#include "common/result.h"

namespace qufop::builder {

inline constexpr std::string_view kMediaIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kMediaManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kMediaConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kMediaLayerTar = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view kMediaLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kMediaLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
// Docker's equivalents, as registries serve images pushed by docker.
inline constexpr std::string_view kMediaDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kMediaDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kMediaDockerConfig =
    "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kMediaDockerLayerGzip =
    "application/vnd.docker.image.rootfs.diff.tar.gzip";
inline constexpr std::string_view kAnnotationRefName = "org.opencontainers.image.ref.name";

// Streaming sha256 (OpenSSL EVP).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(std::string_view data);
  // "sha256:<64 lowercase hex>"; call once.
  std::string digest();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

std::string sha256_digest(std::string_view data);
// "sha256:" followed by 64 lowercase hex digits.
bool valid_digest(std::string_view digest);

// An OCI content descriptor: what a manifest or index says about a blob.
struct BlobRef {
  std::string media_type;
  std::string digest;
  int64_t size = 0;
  std::map<std::string, std::string> annotations;
};

// The parts of an OCI image config that qufop reads and writes. Unknown fields of a parsed
// config are not kept.
struct ImageConfig {
  std::string architecture;  // defaults to the build host's ("amd64", "arm64")
  std::string os = "linux";
  std::string user;
  std::vector<std::string> env;  // "K=V"
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::string working_dir;
  std::vector<std::string> exposed_ports;  // "9100/tcp"
  std::map<std::string, std::string> labels;
  std::string stop_signal;
  std::vector<std::string> diff_ids;  // sha256 of each uncompressed layer, bottom first
};

struct Manifest {
  std::string media_type = std::string(kMediaManifest);
  BlobRef config;
  std::vector<BlobRef> layers;  // bottom first
  std::map<std::string, std::string> annotations;
};

// The architecture name of this host in OCI terms.
std::string host_architecture();

// Serialises with object keys sorted at every level and no blanks: same value, same bytes.
std::string canonical_json(const json::Value& value);
std::string manifest_json(const Manifest& manifest);
std::string config_json(const ImageConfig& config);
// Accept OCI and Docker v2 manifests/configs; errors say which field is wrong.
Result<Manifest> parse_manifest(std::string_view text);
Result<ImageConfig> parse_config(std::string_view text);
bool is_index_media_type(std::string_view media_type);

// A blob being written: data goes to a temp file of the store; commit() checks it and renames
// it into place. Destroyed uncommitted, the temp file is removed.
class BlobWriter {
 public:
  BlobWriter(BlobWriter&&) noexcept;
  BlobWriter& operator=(BlobWriter&&) = delete;
  ~BlobWriter();
  Result<void> write(std::string_view data);
  uint64_t size() const { return size_; }
  // Verifies the digest when `expected` is given (a pull), makes the blob visible and returns
  // its digest and size (media_type left empty).
  Result<BlobRef> commit(std::string_view expected_digest = {});

 private:
  friend class OciStore;
  BlobWriter(std::string blobs_dir, std::string tmp_path, Fd fd);
  std::string blobs_dir_;
  std::string tmp_path_;
  Fd fd_;
  std::unique_ptr<Sha256> hash_;
  uint64_t size_ = 0;
  bool done_ = false;
};

struct TaggedImage {
  std::string name;  // "busybox", "ufop-demo"
  std::string tag;   // "latest", "3"
  BlobRef manifest;
};

struct GcOptions {
  // Unreferenced blobs (and temp files) younger than this are kept: they may belong to a
  // build or pull that has not tagged its image yet.
  std::chrono::seconds min_age{600};
};

struct GcStats {
  size_t blobs_kept = 0;
  size_t blobs_removed = 0;
  uint64_t bytes_removed = 0;
};

// Reads "<len bytes> into buf" until it returns 0 (end).
using ReadFn = std::function<Result<size_t>(char* buf, size_t len)>;

class OciStore {
 public:
  // Opens the layout at `root`, creating an empty one if there is none.
  static Result<OciStore> open(const std::filesystem::path& root);

  const std::filesystem::path& root() const { return root_; }

  Result<BlobWriter> begin_blob() const;
  Result<BlobRef> put_blob(const ReadFn& read, std::string_view expected_digest = {}) const;
  Result<BlobRef> put_blob_bytes(std::string_view data) const;
  bool has_blob(std::string_view digest) const;
  // blobs/sha256/<hex>; the digest must be valid.
  std::filesystem::path blob_path(std::string_view digest) const;
  Result<Fd> open_blob(std::string_view digest) const;
  // Reads a small blob whole and checks its digest.
  Result<std::string> read_blob(std::string_view digest, size_t max_bytes = 4 << 20) const;
  // Re-hashes the blob; an error when it is missing or its content does not match.
  Result<void> verify_blob(std::string_view digest) const;

  Result<BlobRef> put_config(const ImageConfig& config) const;
  Result<BlobRef> put_manifest(const Manifest& manifest) const;
  Result<Manifest> read_manifest(std::string_view digest) const;
  Result<ImageConfig> read_config(std::string_view digest) const;

  // Points NAME:TAG at the manifest (which must be stored), replacing index.json atomically.
  Result<void> tag(std::string_view name, std::string_view tag, const BlobRef& manifest) const;
  Result<void> untag(std::string_view name, std::string_view tag) const;
  // "name", "name:tag" or "name@sha256:…" -> the manifest's descriptor.
  Result<BlobRef> resolve(std::string_view ref) const;
  Result<std::vector<TaggedImage>> list() const;
  // Removes blobs not reachable from index.json (and stale temp files).
  Result<GcStats> gc(const GcOptions& options = {}) const;

 private:
  explicit OciStore(std::filesystem::path root) : root_(std::move(root)) {}
  Result<std::vector<BlobRef>> read_index() const;
  Result<void> write_index(std::vector<BlobRef> entries) const;
  Result<Fd> lock() const;

  std::filesystem::path root_;
};

}  // namespace qufop::builder
