// The puller (for noded, and for the builder's own bases): an image from a registry's
// distribution API (the builder's /v2, or an external registry over plain HTTP) into a local
// store, every blob's digest verified before it becomes visible, and its layers unpacked once
// each into a cache keyed by digest, shared by every instance and build that uses them.
//
// The layer cache: <cache>/<sha256 hex>/ holds a layer in overlay form (OCI whiteouts made
// overlayfs whiteouts), ready to be an overlay lowerdir. A layer is unpacked into
// <cache>/.tmp-<hex>-<pid>-<n> and renamed into place, so a half-unpacked layer is never used;
// two unpackers racing both finish and one rename wins. gc_layer_cache removes the layers no
// image of the store uses.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "builder/oci.h"
#include "common/config.h"
#include "common/result.h"

namespace qufop::builder {

// The unpacked form of a stored layer: <cache_dir>/<hex>, unpacked on first use (needs root
// for the overlay whiteouts of layers that delete something). Thread-safe.
Result<std::string> cached_layer(const OciStore& store, const std::filesystem::path& cache_dir,
                                 std::string_view digest);

struct LayerGcStats {
  size_t kept = 0;
  size_t removed = 0;
};
// Removes the cached layers (and stale temp dirs) that no image tagged in `store` uses.
Result<LayerGcStats> gc_layer_cache(const OciStore& store, const std::filesystem::path& cache_dir);

struct PullOptions {
  std::chrono::milliseconds timeout{60'000};  // per read: silence longer than this fails
  size_t max_manifest_bytes = 4u << 20;
};

struct PulledImage {
  BlobRef manifest;  // descriptor of the stored manifest
  Manifest parsed;
  ImageConfig config;
  std::vector<std::string> layer_dirs;  // unpacked, top first (overlay lowerdir order)
  size_t blobs_fetched = 0;             // blobs that were not in the store yet
};

class Puller {
 public:
  Puller(const OciStore& store, std::filesystem::path cache_dir, PullOptions options = {});

  // Pulls NAME:TAG or NAME@sha256:… from http://registry/v2/. Blobs already in the store are
  // not fetched again. The image is tagged NAME:TAG locally (by digest: NAME:sha256-<hex>) only
  // once every blob is stored and verified; a bad digest fails the pull with nothing tagged.
  Result<PulledImage> pull(const HostPort& registry, std::string_view name,
                           std::string_view reference);

 private:
  Result<bool> fetch_blob(const HostPort& registry, std::string_view name, std::string_view digest);

  const OciStore& store_;
  std::filesystem::path cache_dir_;
  PullOptions options_;
};

}  // namespace qufop::builder
