// Safe extraction of hostile archives: a user's upload (tar or tar.gz) into a fresh directory,
// and, with other policies, an image layer (layer.h's unpack_layer). Entries are written with
// openat(2) relative to directory fds, one component at a time with O_NOFOLLOW, so a symlink
// that the archive itself created is never followed when a later entry is written. On any
// refusal the partly extracted tree is removed. Errors name the entry:
// "upload entry '../etc/passwd': path leaves the upload".
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace qufop::builder {

struct ExtractLimits {
  uint64_t max_entries = 100'000;
  uint64_t max_bytes = 2ull << 30;  // unpacked file data, declared sizes included
  // Unpacked bytes / compressed bytes read so far, checked as data arrives so that a bomb is
  // stopped early. 0 turns the check off.
  uint64_t max_ratio = 100;
  // The ratio is checked once this much is unpacked: a small, very compressible file (100 kB
  // of one repeated byte is 170:1) is no bomb, and a bomb is still stopped within megabytes.
  uint64_t ratio_floor = 1 << 20;
};

// What to do with OCI whiteout entries (".wh.NAME", ".wh..wh..opq").
enum class Whiteouts {
  kLiteral,  // plain files (an upload: the names mean nothing)
  kApply,    // delete what they hide from the destination (flattening layers into one tree)
  kOverlay,  // turn them into overlayfs whiteouts (char device 0/0, trusted.overlay.opaque=y)
             // so the directory can be an overlay lowerdir; needs root
};

struct ExtractOptions {
  ExtractLimits limits;
  // Names the archive in errors: "<label> entry '<path>': …", "path leaves the <label>".
  std::string label = "upload";
  // The defaults are the upload's policy: a user's archive is hostile input.
  bool allow_absolute_symlinks = false;  // layers: a rootfs resolves them inside itself
  bool check_symlink_escape = true;      // relative symlinks must stay inside the tree
  bool strip_leading_slash = false;      // "/etc/x" means "etc/x" (layers) instead of a refusal
  bool keep_setid = false;               // else setuid/setgid bits are stripped
  bool keep_owner = false;               // chown to the archive's uid/gid (needs root)
  bool allow_fifos = false;
  // Device files are skipped instead of refused (layers: a sandbox mounts its own /dev).
  bool skip_devices = false;
  Whiteouts whiteouts = Whiteouts::kLiteral;
  // false: `dest` must not exist; it is created, and removed again on failure.
  // true: `dest` is an existing directory that entries are added to (left as is on failure).
  bool into_existing = false;
};

struct ExtractStats {
  uint64_t entries = 0;
  uint64_t bytes = 0;             // file data written
  uint64_t compressed_bytes = 0;  // bytes read from the archive
};

// Extracts the archive read from `fd` (tar, optionally gzip- or zstd-compressed, detected by
// libarchive) into `dest` under `options`.
Result<ExtractStats> extract_archive(int fd, const std::filesystem::path& dest,
                                     const ExtractOptions& options);

// An upload: the archive file `archive` into the new directory `dest` with the upload policy.
Result<ExtractStats> extract_upload(const std::filesystem::path& archive,
                                    const std::filesystem::path& dest,
                                    const ExtractLimits& limits = {});

// Splits an archive path into components: "./a//b/" -> {"a", "b"}; "" and "." -> {}.
// Refuses "..", and absolute paths unless strip_leading_slash. Pure; exposed for tests.
Result<std::vector<std::string>> split_entry_path(std::string_view path, bool strip_leading_slash);

}  // namespace qufop::builder
