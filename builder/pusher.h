// The pusher: an image of the local store to an external registry over the OCI distribution
// API (plain HTTP), e.g. Debian's docker-registry. Each blob (config, layers) is checked with
// HEAD /v2/<name>/blobs/<digest> and, when missing, uploaded monolithically
// (POST /v2/<name>/blobs/uploads/ -> Location, PUT <Location>?digest=<digest> with the whole
// blob); the manifest is PUT last, under its own media type, so the registry never holds a
// manifest whose blobs are missing. A blob is read whole into memory for its upload.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "builder/oci.h"
#include "common/config.h"
#include "common/result.h"

namespace qufop::builder {

struct PushOptions {
  std::chrono::milliseconds timeout{120'000};  // per request
  size_t max_blob_bytes = size_t{4} << 30;     // a bigger blob is refused (it is held in memory)
};

struct PushedImage {
  BlobRef manifest;           // the manifest as pushed (its digest is the registry's)
  size_t blobs_uploaded = 0;  // blobs the registry did not have
  size_t blobs_present = 0;   // blobs it had already (HEAD 200)
  uint64_t bytes_uploaded = 0;
};

// Appends "digest=<digest>" to an upload Location with '?' or '&' as its query needs, and
// reduces an absolute URL ("http://host:port/v2/…") to its target ("/v2/…").
Result<std::string> upload_target(std::string_view location, std::string_view digest);

// Pushes the local image `local_ref` ("name:tag", "name@sha256:…") to http://registry/v2/ as
// NAME:TAG.
Result<PushedImage> push_image(const OciStore& store, std::string_view local_ref,
                               const HostPort& registry, std::string_view name,
                               std::string_view tag, const PushOptions& options = {});

}  // namespace qufop::builder
