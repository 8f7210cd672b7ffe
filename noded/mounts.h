// The sandbox's root filesystem: an overlay of the image layers with a per-sandbox upper dir,
// /proc, a minimal /dev, /sys read-only, /tmp, Docker's masked and read-only /proc paths, then
// pivot_root. Child-side functions run in the child's own mount namespace (mounts made private
// first), so nothing they do is seen by the host; host-side ones prepare and remove the run dir.
#pragma once

#include <string>
#include <vector>

#include "common/result.h"
#include "noded/spec.h"

namespace qufop::noded {

// Every path the rootfs steps use, computed once in the parent: the child-side functions below
// allocate nothing on their success path (sandbox.cc says why that matters after a fork).
struct RootfsPaths {
  std::string run_dir;
  std::string upper;                     // <run_dir>/upper: the sandbox's writes
  std::string work;                      // <run_dir>/work: overlayfs' scratch
  std::string rootfs;                    // <run_dir>/rootfs: the merged tree, "/" after pivot_root
  std::string overlay_options;           // lowerdir=…,upperdir=…,workdir=…
  std::string overlay_options_volatile;  // the same, ",volatile"
  std::string proc, dev, sys, tmp;       // <rootfs>/proc, …
  struct Bind {
    std::string host;    // /dev/null
    std::string target;  // <rootfs>/dev/null
  };
  std::vector<Bind> dev_nodes;
  std::string dev_null, dev_pts, dev_shm, dev_ptmx, dev_fd, dev_stdin, dev_stdout, dev_stderr;
  std::vector<std::string> masked;    // <rootfs>/proc/kcore, …
  std::vector<std::string> readonly;  // <rootfs>/proc/sys, …
};
RootfsPaths rootfs_paths(const SandboxSpec& spec);

// ---- host side ----

// One line of /proc/self/mountinfo, the fields the sandbox needs (escapes undone).
struct MountEntry {
  std::string target;  // "/sys/fs/cgroup/memory"
  std::string fstype;  // "cgroup", "overlay"
};
Result<std::vector<MountEntry>> read_mountinfo();

// Every layer is an existing directory whose path overlayfs can take (no ',', ':' or '\');
// the /proc the sandbox will see (from the topmost layer that has one) is not a symlink: a
// symlink could send the /proc mount somewhere else.
Result<void> check_layers(const std::vector<std::string>& layers);
// Creates <run_dir> (must not exist) with upper/, work/ and rootfs/.
Result<void> create_run_dir(const RootfsPaths& paths);
// Unmounts every mount at or below `dir` in the caller's mount namespace, deepest first, lazily
// (MNT_DETACH). Nothing mounted is fine.
Result<void> unmount_under(const std::string& dir);
// Removes `dir` and everything in it without following symlinks or crossing into another
// filesystem (a mount left inside, bind mounts included, or `dir` itself being one, is refused
// with EBUSY, never emptied). A missing dir is fine.
Result<void> remove_tree(const std::string& dir);

// ---- child side, in order (sandbox.cc lists the steps) ----

// MS_PRIVATE on every mount: nothing mounted from here on propagates back to the host.
Result<void> make_mounts_private();
// The overlay of the layers at paths.rootfs (volatile: the upper dir never outlives the sandbox).
Result<void> mount_overlay(const RootfsPaths& paths);
// The directories mounts go on, in the merged tree: created when missing; a symlink or a
// non-directory is refused (it could point a mount elsewhere).
Result<void> prepare_mount_points(const RootfsPaths& paths);
Result<void> mount_proc(const RootfsPaths& paths);
Result<void> mount_dev(const RootfsPaths& paths);
Result<void> mount_sys(const RootfsPaths& paths);
Result<void> mount_tmp(const RootfsPaths& paths);
// Docker's masked paths (/proc/kcore, /proc/keys, … /sys/firmware): /dev/null over files, an
// empty read-only tmpfs over directories; and its read-only ones (/proc/sys, /proc/sysrq-trigger,
// /proc/irq, /proc/bus, /proc/fs). After /proc, /sys and /dev exist.
Result<void> mask_paths(const RootfsPaths& paths);
// pivot_root into `rootfs` and detach the old root: the host's tree is gone for good.
Result<void> pivot_into(const std::string& rootfs);
// After pivot_root and every mount that needs a mount point created.
Result<void> remount_root_readonly();

// The masked and read-only lists, for tests and docs.
const std::vector<std::string>& masked_paths();
const std::vector<std::string>& readonly_paths();

}  // namespace qufop::noded
