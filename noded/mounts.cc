#include "noded/mounts.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <fstream>
#include <sstream>

namespace qufop::noded {

namespace {

Result<void> do_mount(const char* source, const std::string& target, const char* fstype,
                      unsigned long flags, const char* data, std::string_view what) {
  if (::mount(source, target.c_str(), fstype, flags, data) != 0) {
    return Error::sys("mount " + std::string(what) + " at " + target, errno);
  }
  return ok();
}

// Bind mount then remount read-only (a bind mount ignores MS_RDONLY on its first call).
Result<void> bind_readonly(const std::string& path) {
  QF_TRY(do_mount(path.c_str(), path, nullptr, MS_BIND | MS_REC, nullptr, "bind"));
  return do_mount(nullptr, path, nullptr,
                  MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr,
                  "read-only remount");
}

// "\040" in /proc/self/mountinfo is a space, and so on.
std::string unescape_mountinfo(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool octal = true;
      for (size_t k = 1; k <= 3; ++k) {
        char c = s[i + k];
        if (c < '0' || c > '7') octal = false;
        v = v * 8 + (c - '0');
      }
      if (octal) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

// Whether `name` in `dirfd` (or `dirfd` itself, for "") is the root of a mount: another
// filesystem, or a bind mount of the same one (which the device number alone would not show).
Result<bool> is_mount_root(int dirfd, const char* name, dev_t dev, const std::string& path) {
  struct statx stx {};
  int flags = AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | (*name ? 0 : AT_EMPTY_PATH);
  if (::statx(dirfd, name, flags, STATX_TYPE, &stx) != 0)
    return Error::sys("stat(" + path + ")", errno);
  if (makedev(stx.stx_dev_major, stx.stx_dev_minor) != dev) return true;
  return (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
         (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
}

Result<void> remove_entries(int dirfd, dev_t dev, const std::string& path) {
  int dup_fd = ::dup(dirfd);
  if (dup_fd < 0) return Error::sys("dup", errno);
  DIR* dir = ::fdopendir(dup_fd);
  if (!dir) {
    ::close(dup_fd);
    return Error::sys("opendir(" + path + ")", errno);
  }
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(dir)) {
    std::string_view n = e->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
  }
  ::closedir(dir);
  for (const auto& name : names) {
    std::string child = path + "/" + name;
    struct stat st {};
    if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;
      return Error::sys("stat(" + child + ")", errno);
    }
    if (S_ISDIR(st.st_mode)) {
      // A mount here survived: never empty what it shows.
      auto mounted = is_mount_root(dirfd, name.c_str(), dev, child);
      if (!mounted) return mounted.error();
      if (*mounted) return Error{"conflict", child + ": still a mount point", EBUSY};
      int sub = ::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0) return Error::sys("open(" + child + ")", errno);
      auto r = remove_entries(sub, dev, child);
      ::close(sub);
      QF_TRY(r);
      if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
        return Error::sys("rmdir(" + child + ")", errno);
      }
    } else if (::unlinkat(dirfd, name.c_str(), 0) != 0 && errno != ENOENT) {
      return Error::sys("unlink(" + child + ")", errno);
    }
  }
  return ok();
}

// Creates an empty regular file to bind a device over.
Result<void> touch(const std::string& path) {
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0666);
  if (fd < 0) return Error::sys("create(" + path + ")", errno);
  ::close(fd);
  return ok();
}

Result<void> make_symlink(const char* target, const std::string& path) {
  if (::symlink(target, path.c_str()) != 0) return Error::sys("symlink(" + path + ")", errno);
  return ok();
}

Result<void> make_dir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0) return Error::sys("mkdir(" + path + ")", errno);
  return ok();
}

}  // namespace

const std::vector<std::string>& masked_paths() {
  static const std::vector<std::string> kPaths = {"/proc/asound",
                                                  "/proc/acpi",
                                                  "/proc/kcore",
                                                  "/proc/keys",
                                                  "/proc/latency_stats",
                                                  "/proc/timer_list",
                                                  "/proc/timer_stats",
                                                  "/proc/sched_debug",
                                                  "/proc/scsi",
                                                  "/sys/firmware",
                                                  "/sys/devices/virtual/powercap"};
  return kPaths;
}

const std::vector<std::string>& readonly_paths() {
  static const std::vector<std::string> kPaths = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                                  "/proc/sysrq-trigger"};
  return kPaths;
}

RootfsPaths rootfs_paths(const SandboxSpec& spec) {
  RootfsPaths p;
  p.run_dir = spec.run_dir;
  p.upper = spec.run_dir + "/upper";
  p.work = spec.run_dir + "/work";
  p.rootfs = spec.run_dir + "/rootfs";
  // One layer is a plain read-only lower under the upper; several stack top first.
  std::string lower;
  for (const auto& layer : spec.layers) {
    if (!lower.empty()) lower += ':';
    lower += layer;
  }
  p.overlay_options = "lowerdir=" + lower + ",upperdir=" + p.upper + ",workdir=" + p.work;
  p.overlay_options_volatile = p.overlay_options + ",volatile";
  p.proc = p.rootfs + "/proc";
  p.dev = p.rootfs + "/dev";
  p.sys = p.rootfs + "/sys";
  p.tmp = p.rootfs + "/tmp";
  for (const char* name : {"null", "zero", "full", "random", "urandom", "tty"}) {
    p.dev_nodes.push_back({std::string("/dev/") + name, p.dev + "/" + name});
  }
  p.dev_null = p.dev + "/null";
  p.dev_pts = p.dev + "/pts";
  p.dev_shm = p.dev + "/shm";
  p.dev_ptmx = p.dev + "/ptmx";
  p.dev_fd = p.dev + "/fd";
  p.dev_stdin = p.dev + "/stdin";
  p.dev_stdout = p.dev + "/stdout";
  p.dev_stderr = p.dev + "/stderr";
  for (const auto& m : masked_paths()) p.masked.push_back(p.rootfs + m);
  for (const auto& r : readonly_paths()) p.readonly.push_back(p.rootfs + r);
  return p;
}

Result<void> check_layers(const std::vector<std::string>& layers) {
  if (layers.empty()) return Error::invalid("no rootfs layer given");
  bool proc_seen = false;
  for (const auto& layer : layers) {
    if (layer.empty() || layer[0] != '/') {
      return Error::invalid("rootfs layer '" + layer + "' is not an absolute path");
    }
    if (layer.find_first_of(",:\\") != std::string::npos) {
      return Error::invalid("rootfs layer '" + layer + "' contains ',', ':' or '\\'");
    }
    struct stat st {};
    if (::stat(layer.c_str(), &st) != 0) {
      return Error::sys("rootfs " + layer, errno);
    }
    if (!S_ISDIR(st.st_mode)) return Error::invalid("rootfs " + layer + " is not a directory");
    if (proc_seen) continue;
    // Top first: the first layer that has /proc decides what the merged tree shows.
    std::string proc = layer + "/proc";
    if (::lstat(proc.c_str(), &st) == 0) {
      proc_seen = true;
      if (S_ISLNK(st.st_mode)) {
        return Error::invalid("rootfs " + layer +
                              ": /proc is a symlink; refusing (it could redirect the /proc mount)");
      }
    }
  }
  return ok();
}

Result<void> create_run_dir(const RootfsPaths& paths) {
  if (::mkdir(paths.run_dir.c_str(), 0700) != 0) {
    if (errno == EEXIST) {
      return Error{"already_exists",
                   "run dir " + paths.run_dir +
                       " already exists (left by an earlier sandbox "
                       "of the same id? remove it)",
                   EEXIST};
    }
    return Error::sys("mkdir(" + paths.run_dir + ")", errno);
  }
  // All or nothing: a failure here leaves no half-made run dir.
  for (auto [dir, mode] :
       {std::pair{&paths.upper, 0755}, {&paths.work, 0700}, {&paths.rootfs, 0755}}) {
    if (auto r = make_dir(*dir, static_cast<mode_t>(mode)); !r.ok()) {
      (void)remove_tree(paths.run_dir);
      return r;
    }
  }
  return ok();
}

Result<std::vector<MountEntry>> read_mountinfo() {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return Error::sys("open(/proc/self/mountinfo)", errno);
  std::vector<MountEntry> out;
  std::string line;
  while (std::getline(in, line)) {
    // "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw": field 5 is the target,
    // the one after " - " the filesystem type.
    std::istringstream fields(line);
    std::string field, target;
    for (int i = 0; i < 5 && fields >> field; ++i) target = field;
    size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream after(line.substr(dash + 3));
    MountEntry e;
    after >> e.fstype;
    e.target = unescape_mountinfo(target);
    out.push_back(std::move(e));
  }
  return out;
}

Result<void> unmount_under(const std::string& dir) {
  auto mounts = read_mountinfo();
  if (!mounts) return mounts.error();
  std::vector<std::string> targets;
  for (const auto& m : *mounts) {
    if (m.target == dir || m.target.rfind(dir + "/", 0) == 0) targets.push_back(m.target);
  }
  // Deepest first; the same path may be stacked several times.
  std::sort(targets.begin(), targets.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (const auto& t : targets) {
    if (::umount2(t.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0 && errno != EINVAL &&
        errno != ENOENT) {
      return Error::sys("umount(" + t + ")", errno);
    }
  }
  return ok();
}

Result<void> remove_tree(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return ok();
    return Error::sys("open(" + dir + ")", errno);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return Error::sys("stat(" + dir + ")", err);
  }
  auto mounted = is_mount_root(fd, "", st.st_dev, dir);
  Result<void> r = ok();
  if (!mounted) {
    r = mounted.error();
  } else if (*mounted) {
    r = Error{"conflict", dir + ": is a mount point", EBUSY};
  } else {
    r = remove_entries(fd, st.st_dev, dir);
  }
  ::close(fd);
  QF_TRY(r);
  if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) return Error::sys("rmdir(" + dir + ")", errno);
  return ok();
}

Result<void> make_mounts_private() {
  return do_mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr, "private propagation");
}

Result<void> mount_overlay(const RootfsPaths& paths) {
  // "volatile" skips the syncs of the upper dir (one at unmount costs milliseconds); the upper
  // dir is removed at release anyway. Kernels before 5.10 refuse it: remembered, not retried.
  static std::atomic<bool> volatile_ok{true};
  if (volatile_ok.load()) {
    if (::mount("overlay", paths.rootfs.c_str(), "overlay", 0,
                paths.overlay_options_volatile.c_str()) == 0) {
      return ok();
    }
    if (errno != EINVAL) return Error::sys("mount overlay at " + paths.rootfs, errno);
    volatile_ok = false;
  }
  return do_mount("overlay", paths.rootfs, "overlay", 0, paths.overlay_options.c_str(), "overlay");
}

Result<void> prepare_mount_points(const RootfsPaths& paths) {
  int root = ::open(paths.rootfs.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) return Error::sys("open(" + paths.rootfs + ")", errno);
  Result<void> result = ok();
  for (const char* name : {"proc", "dev", "sys", "tmp"}) {
    struct stat st {};
    if (::fstatat(root, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT && ::mkdirat(root, name, 0755) == 0) continue;
      result = Error::sys("rootfs /" + std::string(name), errno);
      break;
    }
    if (S_ISLNK(st.st_mode)) {
      result = Error::invalid("rootfs /" + std::string(name) +
                              " is a symlink; refusing (it could redirect the mount)");
      break;
    }
    if (!S_ISDIR(st.st_mode)) {
      result = Error::invalid("rootfs /" + std::string(name) + " is not a directory");
      break;
    }
  }
  ::close(root);
  return result;
}

Result<void> mount_proc(const RootfsPaths& paths) {
  return do_mount("proc", paths.proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr, "proc");
}

namespace {

// A device node of the host's, made with the host's device number (mode 0666, as Docker's):
// mknod is a few microseconds where a bind mount costs a mount now and an unmount when the
// sandbox ends. Where mknod is refused (no CAP_MKNOD), the host's node is bound instead.
Result<void> make_device_node(const RootfsPaths::Bind& node) {
  struct stat st {};
  if (::stat(node.host.c_str(), &st) != 0) return ok();  // a host without it (no tty): skip
  if (!S_ISCHR(st.st_mode)) return ok();
  if (::mknod(node.target.c_str(), S_IFCHR | 0666, st.st_rdev) == 0) {
    // mknod's mode went through the umask.
    if (::chmod(node.target.c_str(), 0666) != 0) return Error::sys("chmod " + node.target, errno);
    return ok();
  }
  if (errno != EPERM) return Error::sys("mknod " + node.target, errno);
  QF_TRY(touch(node.target));
  return do_mount(node.host.c_str(), node.target, nullptr, MS_BIND, nullptr, "device bind");
}

}  // namespace

Result<void> mount_dev(const RootfsPaths& p) {
  QF_TRY(do_mount("tmpfs", p.dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=65536k", "tmpfs"));
  for (const auto& node : p.dev_nodes) QF_TRY(make_device_node(node));
  QF_TRY(make_dir(p.dev_pts, 0755));
  QF_TRY(do_mount("devpts", p.dev_pts, "devpts", MS_NOSUID | MS_NOEXEC,
                  "newinstance,ptmxmode=0666,mode=0620", "devpts"));
  QF_TRY(make_dir(p.dev_shm, 01777));
  QF_TRY(do_mount("shm", p.dev_shm, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  "mode=1777,size=65536k", "tmpfs"));
  QF_TRY(make_symlink("pts/ptmx", p.dev_ptmx));
  QF_TRY(make_symlink("/proc/self/fd", p.dev_fd));
  QF_TRY(make_symlink("/proc/self/fd/0", p.dev_stdin));
  QF_TRY(make_symlink("/proc/self/fd/1", p.dev_stdout));
  QF_TRY(make_symlink("/proc/self/fd/2", p.dev_stderr));
  return ok();
}

Result<void> mount_sys(const RootfsPaths& paths) {
  return do_mount("sysfs", paths.sys, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  nullptr, "sysfs");
}

Result<void> mount_tmp(const RootfsPaths& paths) {
  return do_mount("tmpfs", paths.tmp, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", "tmpfs");
}

Result<void> mask_paths(const RootfsPaths& p) {
  for (const auto& target : p.masked) {
    struct stat st {};
    if (::lstat(target.c_str(), &st) != 0) continue;  // not on this kernel
    if (S_ISDIR(st.st_mode)) {
      QF_TRY(do_mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                      nullptr, "masking tmpfs"));
    } else {
      QF_TRY(do_mount(p.dev_null.c_str(), target, nullptr, MS_BIND, nullptr, "masking /dev/null"));
    }
  }
  for (const auto& target : p.readonly) {
    if (::access(target.c_str(), F_OK) != 0) continue;
    QF_TRY(bind_readonly(target));
  }
  return ok();
}

Result<void> pivot_into(const std::string& rootfs) {
  if (::chdir(rootfs.c_str()) != 0) return Error::sys("chdir(" + rootfs + ")", errno);
  // pivot_root(".", "."): the old root ends up stacked under the new one, then is detached;
  // no put_old directory is needed in the image.
  if (::syscall(SYS_pivot_root, ".", ".") != 0) return Error::sys("pivot_root", errno);
  if (::umount2(".", MNT_DETACH) != 0) return Error::sys("umount(old root)", errno);
  if (::chdir("/") != 0) return Error::sys("chdir(/)", errno);
  return ok();
}

Result<void> remount_root_readonly() {
  return do_mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr,
                  "read-only remount of /");
}

}  // namespace qufop::noded
