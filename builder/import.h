// Base images enter the store by import (DESIGN.md "Builder"): a rootfs tarball becomes a
// one-layer image (layer.h), an OCI archive (a tar of an OCI image layout, as `skopeo copy ...
// oci-archive:FILE` writes it) is copied blob by blob, every digest verified.
#pragma once

#include <filesystem>
#include <string_view>

#include "builder/oci.h"
#include "common/result.h"

namespace qufop::builder {

// True when the tarball holds an `oci-layout` file at its root (read from the headers only).
Result<bool> is_oci_archive(const std::filesystem::path& tarball);

// The archive's image (the one named `ref`'s tag in its index, else its only image) tagged
// `ref` in the store. Multi-platform indexes are refused with a clear error.
Result<BlobRef> import_oci_archive(const OciStore& store, std::string_view ref,
                                   const std::filesystem::path& tarball,
                                   const std::filesystem::path& tmp_dir);

// Either of the above, by what the tarball holds.
Result<BlobRef> import_image(const OciStore& store, std::string_view ref,
                             const std::filesystem::path& tarball,
                             const std::filesystem::path& tmp_dir);

}  // namespace qufop::builder
