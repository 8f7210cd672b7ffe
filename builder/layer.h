// Image layers: a directory (or an overlayfs upper dir) -> a reproducible layer tarball in the
// store; a rootfs tarball -> a one-layer image; a stored layer -> a directory.
//
// Reproducible: entries sorted by path, one fixed mtime, uid/gid 0 unless told, no atime/ctime,
// no user/group names, no xattrs, gzip without timestamp or name. The same tree gives the same
// digest whatever its timestamps or owners on disk.
//
// Making a layer is split in three so the conversion is testable without root: scan_tree reads
// the disk into FsEntry records, plan_layer (pure) turns them into sorted TarEntry records
// (overlayfs whiteouts -> OCI whiteouts), write_layer streams them into a blob.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "builder/extract.h"
#include "builder/oci.h"
#include "common/result.h"

namespace qufop::builder {

struct LayerOptions {
  bool gzip = true;             // application/vnd.oci.image.layer.v1.tar+gzip, else +tar
  int64_t mtime = 0;            // every entry's mtime (seconds since the epoch)
  bool preserve_owner = false;  // else every entry is owned by 0:0
  uint32_t id_shift = 0;        // with preserve_owner: subtracted from on-disk ids (user namespace)
  // The directory is an overlayfs upper dir: char devices 0/0 are deletions and directories
  // with trusted.overlay.opaque=y (or user.overlay.opaque) hide their lower contents.
  bool overlay_upper = false;
};

enum class EntryType {
  kFile,
  kDir,
  kSymlink,
  kHardlink,
  kFifo,
  kCharDevice,
  kBlockDevice,
  kSocket
};

// One thing found on disk (lstat + xattrs).
struct FsEntry {
  std::string path;  // relative to the scanned root, "a/b"; never empty
  EntryType type = EntryType::kFile;
  uint32_t mode = 0644;  // permission bits incl. setuid/setgid/sticky
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t size = 0;
  std::string link_target;  // symlinks
  uint32_t rdev_major = 0;
  uint32_t rdev_minor = 0;
  bool opaque = false;  // directories: the overlay opaque xattr is "y"
  uint64_t dev = 0;     // with ino and nlink: finds hard links
  uint64_t ino = 0;
  uint64_t nlink = 1;
};

// One tar entry to write.
struct TarEntry {
  std::string name;  // "a/b"; directories are written as "a/b/"
  EntryType type = EntryType::kFile;
  uint32_t mode = 0644;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t size = 0;
  std::string link;    // symlink target, or the hard link's earlier entry
  std::string source;  // the file on disk holding the content (relative to the root); "" = empty

  bool operator==(const TarEntry&) const = default;
};

// Reads a tree without following symlinks; opaque flags are read when `overlay_xattrs`.
Result<std::vector<FsEntry>> scan_tree(const std::filesystem::path& root, bool overlay_xattrs);

// Pure: sorted tar entries for what was scanned. With options.overlay_upper, a char device
// 0/0 "d/x" becomes the empty file "d/.wh.x" and an opaque directory "d" gains "d/.wh..wh..opq".
// Refuses names starting with ".wh." (they would read as whiteouts), sockets and devices.
Result<std::vector<TarEntry>> plan_layer(std::vector<FsEntry> entries, const LayerOptions& options);

struct Layer {
  BlobRef blob;         // media type, digest and size of the (compressed) blob
  std::string diff_id;  // sha256 of the uncompressed tar
};

// Writes the planned entries (content read below `root`) as a layer blob into the store.
Result<Layer> write_layer(const OciStore& store, const std::filesystem::path& root,
                          const std::vector<TarEntry>& entries, const LayerOptions& options);
// scan_tree + plan_layer + write_layer.
Result<Layer> make_layer(const OciStore& store, const std::filesystem::path& dir,
                         const LayerOptions& options = {});

// A rootfs tarball (tar, tar.gz, tar.xz, tar.zst) becomes a one-layer image tagged `ref`
// ("busybox" or "busybox:1.36") with a minimal config (os, architecture, PATH). Entries keep
// their owners, modes and mtimes; names are normalised ("./bin" -> "bin"); ".." is refused.
// Returns the manifest's descriptor.
Result<BlobRef> import_rootfs_tarball(const OciStore& store, std::string_view ref,
                                      const std::filesystem::path& tarball);

// The extraction policy for image layers: absolute symlinks and setuid bits are kept, owners
// too when running as root; device files are skipped (a sandbox mounts its own /dev); no
// compression-ratio check (zero-filled files are common in real images); whiteouts as `mode`.
ExtractOptions layer_extract_options(Whiteouts mode);
// Unpacks a stored layer into `dir`. With Whiteouts::kApply `dir` is an existing tree that the
// layer is applied on top of (set options.into_existing); with kOverlay `dir` is new and
// becomes an overlay lowerdir of its own.
Result<ExtractStats> unpack_layer(const OciStore& store, std::string_view digest,
                                  const std::filesystem::path& dir, const ExtractOptions& options);

}  // namespace qufop::builder
