#include "builder/extract.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <deque>
#include <map>
#include <memory>
#include <unordered_set>

#include "builder/fsutil.h"

namespace qufop::builder {
namespace {

constexpr size_t kReadChunk = 64 << 10;
constexpr int kMaxSymlinkHops = 40;
constexpr size_t kMaxDepth = 256;                // path components of one entry
constexpr uid_t kNoId = static_cast<uid_t>(-1);  // fchown: leave as is
constexpr gid_t kNoGid = static_cast<gid_t>(-1);

std::string join(const std::vector<std::string>& parts, size_t n) {
  std::string s;
  for (size_t i = 0; i < n && i < parts.size(); ++i) {
    if (i) s += '/';
    s += parts[i];
  }
  return s;
}
std::string join(const std::vector<std::string>& parts) { return join(parts, parts.size()); }

std::string human_bytes(uint64_t n) {
  if (n >= (1ull << 30) && n % (1ull << 30) == 0) return std::to_string(n >> 30) + " GiB";
  if (n >= (1ull << 20) && n % (1ull << 20) == 0) return std::to_string(n >> 20) + " MiB";
  return std::to_string(n) + " bytes";
}

// Removes `name` in `dirfd` and everything under it, never following a symlink.
Result<void> remove_tree_at(int dirfd, const std::string& name, const std::string& what) {
  struct stat st;
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return ok();
    return Error::sys("stat(" + what + ")", errno);
  }
  if (S_ISDIR(st.st_mode)) {
    int fd = ::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return Error::sys("open(" + what + ")", errno);
    DIR* dir = ::fdopendir(fd);
    if (dir == nullptr) {
      ::close(fd);
      return Error::sys("fdopendir(" + what + ")", errno);
    }
    std::unique_ptr<DIR, int (*)(DIR*)> closer(dir, ::closedir);
    std::vector<std::string> children;
    while (dirent* d = ::readdir(dir)) {
      std::string_view n = d->d_name;
      if (n != "." && n != "..") children.emplace_back(n);
    }
    for (const auto& c : children) QF_TRY(remove_tree_at(::dirfd(dir), c, what + "/" + c));
    if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0) {
      return Error::sys("rmdir(" + what + ")", errno);
    }
    return ok();
  }
  if (::unlinkat(dirfd, name.c_str(), 0) != 0) return Error::sys("unlink(" + what + ")", errno);
  return ok();
}

// The libarchive read callback: counts the compressed bytes handed over.
struct Source {
  int fd;
  uint64_t consumed = 0;
  int saved_errno = 0;
  std::vector<char> buf = std::vector<char>(kReadChunk);

  static la_ssize_t read(struct archive*, void* self, const void** out) {
    auto* s = static_cast<Source*>(self);
    for (;;) {
      ssize_t n = ::read(s->fd, s->buf.data(), s->buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        s->saved_errno = errno;
        return -1;
      }
      s->consumed += static_cast<uint64_t>(n);
      *out = s->buf.data();
      return n;
    }
  }
};

using ArchivePtr = std::unique_ptr<struct archive, int (*)(struct archive*)>;

class Extractor {
 public:
  Extractor(int root_fd, const ExtractOptions& o) : root_(root_fd), o_(o) {}

  Result<ExtractStats> run(int fd) {
    ArchivePtr a(archive_read_new(), archive_read_free);
    if (!a) return Error::io("archive_read_new failed");
    archive_read_support_format_tar(a.get());
    archive_read_support_filter_gzip(a.get());
    archive_read_support_filter_zstd(a.get());
    Source src{fd};
    if (archive_read_open(a.get(), &src, nullptr, &Source::read, nullptr) != ARCHIVE_OK) {
      return archive_error(a.get(), src);
    }
    for (;;) {
      archive_entry* e = nullptr;
      int r = archive_read_next_header(a.get(), &e);
      if (r == ARCHIVE_EOF) break;
      if (r != ARCHIVE_OK && r != ARCHIVE_WARN) return archive_error(a.get(), src);
      if (++stats_.entries > o_.limits.max_entries) {
        return Error::invalid(o_.label + ": more than " + std::to_string(o_.limits.max_entries) +
                              " entries");
      }
      const char* raw = archive_entry_pathname(e);
      if (raw == nullptr) raw = archive_entry_pathname_utf8(e);
      if (raw == nullptr) return Error::invalid(o_.label + ": an entry has no readable name");
      entry_ = raw;
      auto r2 = entry(a.get(), e, src);
      stats_.compressed_bytes = src.consumed;
      if (!r2) return r2.error();
    }
    stats_.compressed_bytes = src.consumed;
    if (o_.check_symlink_escape) {
      for (const auto& path : symlinks_) QF_TRY(check_resolved_symlink(path));
    }
    QF_TRY(apply_dir_modes());
    return stats_;
  }

 private:
  // split_entry_path speaks of "the upload"; name the archive this is.
  std::string leaves(const std::string& message) const {
    return message == "path leaves the upload" ? "path leaves the " + o_.label : message;
  }
  Error refuse(std::string_view why) const {
    return Error::invalid(o_.label + " entry '" + entry_ + "': " + std::string(why));
  }
  Error sys(std::string_view call, int err) const {
    return Error::sys(std::string(call) + "(" + o_.label + " entry '" + entry_ + "')", err);
  }
  Error archive_error(struct archive* a, const Source& src) const {
    if (src.saved_errno) return Error::sys("read(" + o_.label + ")", src.saved_errno);
    const char* msg = archive_error_string(a);
    std::string where = entry_.empty() ? o_.label : o_.label + " after entry '" + entry_ + "'";
    return Error::invalid(
        where + ": not a readable tar or tar.gz archive: " + (msg ? msg : "unknown error"));
  }

  Result<void> entry(struct archive* a, archive_entry* e, Source& src) {
    if (entry_.size() > PATH_MAX) {
      return refuse("path longer than " + std::to_string(PATH_MAX) + " bytes");
    }
    auto parts = split_entry_path(entry_, o_.strip_leading_slash);
    if (!parts) return refuse(leaves(parts.error().message));
    if (parts->empty()) return ok();  // "./": the root itself
    if (parts->size() > kMaxDepth) {
      return refuse("path deeper than " + std::to_string(kMaxDepth) + " levels");
    }
    const char* hardlink = archive_entry_hardlink(e);
    mode_t type = archive_entry_filetype(e);
    std::string name = parts->back();

    if (o_.whiteouts != Whiteouts::kLiteral && name.rfind(".wh.", 0) == 0) {
      return whiteout(*parts);
    }
    auto parent = open_parent(*parts, true);
    if (!parent) return parent.error();
    int pfd = parent->get();

    if (hardlink != nullptr) return make_hardlink(pfd, *parts, hardlink);
    switch (type) {
      case AE_IFDIR:
        return make_dir(pfd, *parts, e);
      case AE_IFREG:
        return make_file(a, e, src, pfd, *parts);
      case AE_IFLNK:
        return make_symlink(pfd, *parts, e);
      case AE_IFIFO:
        if (!o_.allow_fifos) return refuse("a fifo (special files are refused)");
        QF_TRY(clear_slot(pfd, *parts, false));
        if (::mkfifoat(pfd, name.c_str(), mode_of(e)) != 0) return sys("mkfifo", errno);
        return set_owner(pfd, name, e);
      case AE_IFCHR:
        if (o_.skip_devices) return ok();
        return refuse("a character device (device files are refused)");
      case AE_IFBLK:
        if (o_.skip_devices) return ok();
        return refuse("a block device (device files are refused)");
      case AE_IFSOCK:
        return refuse("a socket (special files are refused)");
      default:
        return refuse("an entry of unknown type");
    }
  }

  mode_t mode_of(archive_entry* e) const {
    return archive_entry_perm(e) & (o_.keep_setid ? 07777 : 01777);
  }

  // The parent directory of `parts`, walked one component at a time without following a
  // symlink; missing directories are created when `create`. The last parent is cached, as
  // archives list a directory's entries together.
  Result<Fd> open_parent(const std::vector<std::string>& parts, bool create) {
    std::string parent_path = join(parts, parts.size() - 1);
    if (cache_fd_.valid() && parent_path == cache_path_) {
      Fd dup(::fcntl(cache_fd_.get(), F_DUPFD_CLOEXEC, 0));
      if (!dup.valid()) return sys("dup", errno);
      return dup;
    }
    Fd cur(::fcntl(root_, F_DUPFD_CLOEXEC, 0));
    if (!cur.valid()) return sys("dup", errno);
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      const char* c = parts[i].c_str();
      int fd = ::openat(cur.get(), c, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0 && errno == ENOENT && create) {
        if (::mkdirat(cur.get(), c, 0700) != 0 && errno != EEXIST) return sys("mkdir", errno);
        dir_modes_.try_emplace(join(parts, i + 1), DirMeta{0755, 0, kNoId, kNoGid});
        created_.insert(join(parts, i + 1));
        fd = ::openat(cur.get(), c, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      }
      if (fd < 0) {
        int err = errno;
        struct stat st;
        if (::fstatat(cur.get(), c, &st, AT_SYMLINK_NOFOLLOW) == 0) {
          if (S_ISLNK(st.st_mode)) {
            return refuse("path goes through symlink '" + join(parts, i + 1) + "'");
          }
          if (!S_ISDIR(st.st_mode)) {
            return refuse("'" + join(parts, i + 1) + "' is not a directory");
          }
        }
        return sys("open", err);
      }
      cur.reset(fd);
    }
    cache_fd_.reset(::fcntl(cur.get(), F_DUPFD_CLOEXEC, 0));
    cache_path_ = cache_fd_.valid() ? parent_path : std::string();
    return cur;
  }

  // Anything that removes a directory may remove the cached one.
  Result<void> remove_tree(int dirfd, const std::string& name) {
    cache_fd_.reset();
    cache_path_.clear();
    return remove_tree_at(dirfd, name, entry_);
  }

  // Makes room for a new entry named parts.back() in `pfd`: an existing non-directory is
  // unlinked; an existing directory is kept when `want_dir`, else removed (layers) or refused.
  Result<bool> clear_slot(int pfd, const std::vector<std::string>& parts, bool want_dir) {
    const std::string& name = parts.back();
    struct stat st;
    if (::fstatat(pfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return false;
      return sys("stat", errno);
    }
    if (S_ISDIR(st.st_mode)) {
      if (want_dir) return true;
      if (o_.whiteouts == Whiteouts::kLiteral) return refuse("replaces a directory");
      QF_TRY(remove_tree(pfd, name));
      return false;
    }
    if (::unlinkat(pfd, name.c_str(), 0) != 0) return sys("unlink", errno);
    return false;
  }

  Result<void> make_dir(int pfd, const std::vector<std::string>& parts, archive_entry* e) {
    auto exists = clear_slot(pfd, parts, true);
    if (!exists) return exists.error();
    if (!*exists && ::mkdirat(pfd, parts.back().c_str(), 0700) != 0) return sys("mkdir", errno);
    std::string path = join(parts);
    created_.insert(path);
    uid_t uid = o_.keep_owner ? static_cast<uid_t>(archive_entry_uid(e)) : kNoId;
    gid_t gid = o_.keep_owner ? static_cast<gid_t>(archive_entry_gid(e)) : kNoGid;
    dir_modes_[path] = DirMeta{mode_of(e), archive_entry_mtime(e), uid, gid};
    return ok();
  }

  Result<void> make_file(struct archive* a, archive_entry* e, Source& src, int pfd,
                         const std::vector<std::string>& parts) {
    int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
    if (size < 0) return refuse("negative size");
    if (stats_.bytes + static_cast<uint64_t>(size) > o_.limits.max_bytes ||
        declared_ + static_cast<uint64_t>(size) > o_.limits.max_bytes) {
      return refuse("unpacks to more than " + human_bytes(o_.limits.max_bytes));
    }
    declared_ += static_cast<uint64_t>(size);
    QF_TRY(clear_slot(pfd, parts, false));
    const std::string& name = parts.back();
    Fd fd(::openat(pfd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd.valid()) return sys("open", errno);
    created_.insert(join(parts));
    for (;;) {
      const void* buf = nullptr;
      size_t len = 0;
      la_int64_t offset = 0;
      int r = archive_read_data_block(a, &buf, &len, &offset);
      if (r == ARCHIVE_EOF) break;
      if (r != ARCHIVE_OK && r != ARCHIVE_WARN) return archive_error(a, src);
      if (offset < 0 || static_cast<uint64_t>(offset) + len > static_cast<uint64_t>(size)) {
        return refuse("data beyond the entry's size");
      }
      stats_.bytes += len;
      if (stats_.bytes > o_.limits.max_bytes) {
        return refuse("unpacks to more than " + human_bytes(o_.limits.max_bytes));
      }
      if (o_.limits.max_ratio > 0 && stats_.bytes > o_.limits.ratio_floor &&
          stats_.bytes > o_.limits.max_ratio * src.consumed) {
        return refuse("compression ratio over " + std::to_string(o_.limits.max_ratio) + " (" +
                      std::to_string(stats_.bytes) + " bytes unpacked from " +
                      std::to_string(src.consumed) + "): refused as a decompression bomb");
      }
      QF_TRY(pwrite_all(fd.get(), std::string_view(static_cast<const char*>(buf), len), offset,
                        o_.label + " entry '" + entry_ + "'"));
    }
    if (::ftruncate(fd.get(), size) != 0) return sys("ftruncate", errno);
    if (o_.keep_owner && ::fchown(fd.get(), static_cast<uid_t>(archive_entry_uid(e)),
                                  static_cast<gid_t>(archive_entry_gid(e))) != 0) {
      return sys("chown", errno);
    }
    // After chown, which clears setuid bits.
    if (::fchmod(fd.get(), mode_of(e)) != 0) return sys("chmod", errno);
    timespec times[2] = {{0, UTIME_OMIT}, {archive_entry_mtime(e), 0}};
    if (::futimens(fd.get(), times) != 0) return sys("utimens", errno);
    return ok();
  }

  // Lexically, from the link's directory: does `target` climb above the root?
  static bool leaves_lexically(const std::vector<std::string>& parts, std::string_view target) {
    std::vector<std::string> stack(parts.begin(), parts.end() - 1);
    size_t start = 0;
    while (start <= target.size()) {
      size_t slash = target.find('/', start);
      std::string_view c = target.substr(start, slash == target.npos ? target.npos : slash - start);
      if (c == "..") {
        if (stack.empty()) return true;
        stack.pop_back();
      } else if (!c.empty() && c != ".") {
        stack.emplace_back(c);
      }
      if (slash == target.npos) break;
      start = slash + 1;
    }
    return false;
  }

  Result<void> make_symlink(int pfd, const std::vector<std::string>& parts, archive_entry* e) {
    const char* t = archive_entry_symlink(e);
    if (t == nullptr) t = archive_entry_symlink_utf8(e);
    if (t == nullptr || *t == '\0') return refuse("a symlink with no target");
    std::string target = t;
    if (target.front() == '/') {
      if (!o_.allow_absolute_symlinks) {
        return refuse("symlink to '" + target +
                      "' (absolute targets are refused; use a "
                      "relative one)");
      }
    } else if (o_.check_symlink_escape && leaves_lexically(parts, target)) {
      return refuse("symlink to '" + target + "' leaves the " + o_.label);
    }
    QF_TRY(clear_slot(pfd, parts, false));
    const std::string& name = parts.back();
    if (::symlinkat(target.c_str(), pfd, name.c_str()) != 0) return sys("symlink", errno);
    std::string path = join(parts);
    created_.insert(path);
    symlinks_.push_back(path);
    QF_TRY(set_owner(pfd, name, e));
    timespec times[2] = {{0, UTIME_OMIT}, {archive_entry_mtime(e), 0}};
    if (::utimensat(pfd, name.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
      return sys("utimens", errno);
    }
    return ok();
  }

  Result<void> set_owner(int pfd, const std::string& name, archive_entry* e) {
    if (!o_.keep_owner) return ok();
    if (::fchownat(pfd, name.c_str(), static_cast<uid_t>(archive_entry_uid(e)),
                   static_cast<gid_t>(archive_entry_gid(e)), AT_SYMLINK_NOFOLLOW) != 0) {
      return sys("chown", errno);
    }
    return ok();
  }

  Result<void> make_hardlink(int pfd, const std::vector<std::string>& parts, const char* target) {
    auto tparts = split_entry_path(target, o_.strip_leading_slash);
    if (!tparts) {
      return refuse("hard link to '" + std::string(target) + "' leaves the " + o_.label);
    }
    std::string not_earlier = "hard link to '" + std::string(target) +
                              "', which is not an earlier file of the " + o_.label;
    if (tparts->empty()) return refuse(not_earlier);
    auto tparent = open_parent(*tparts, false);
    if (!tparent) return refuse(not_earlier);
    struct stat st;
    if (::fstatat(tparent->get(), tparts->back().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISREG(st.st_mode) || (!o_.into_existing && !created_.count(join(*tparts)))) {
      return refuse(not_earlier);
    }
    if (join(*tparts) == join(parts)) return ok();  // a link to itself: nothing to do
    QF_TRY(clear_slot(pfd, parts, false));
    if (::linkat(tparent->get(), tparts->back().c_str(), pfd, parts.back().c_str(), 0) != 0) {
      return sys("link", errno);
    }
    created_.insert(join(parts));
    return ok();
  }

  Result<void> whiteout(const std::vector<std::string>& parts) {
    const std::string& name = parts.back();
    std::vector<std::string> dir(parts.begin(), parts.end() - 1);
    auto parent = open_parent(parts, true);
    if (!parent) return parent.error();
    std::string dir_path = join(dir);
    if (name == ".wh..wh..opq") {
      if (o_.whiteouts == Whiteouts::kOverlay) {
        // fsetxattr needs a real fd: reopen the parent (not followed: it was walked above).
        Fd dfd(::openat(parent->get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!dfd.valid()) return sys("open", errno);
        if (::fsetxattr(dfd.get(), "trusted.overlay.opaque", "y", 1, 0) != 0) {
          return sys("setxattr(trusted.overlay.opaque)", errno);
        }
        return ok();
      }
      // kApply: hide everything below `dir` that this archive did not create.
      Fd dfd(::openat(parent->get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!dfd.valid()) return sys("open", errno);
      DIR* d = ::fdopendir(::fcntl(dfd.get(), F_DUPFD_CLOEXEC, 0));
      if (d == nullptr) return sys("fdopendir", errno);
      std::unique_ptr<DIR, int (*)(DIR*)> closer(d, ::closedir);
      std::vector<std::string> doomed;
      while (dirent* de = ::readdir(d)) {
        std::string_view n = de->d_name;
        if (n == "." || n == "..") continue;
        std::string child = dir_path.empty() ? std::string(n) : dir_path + "/" + std::string(n);
        if (!created_.count(child)) doomed.emplace_back(n);
      }
      for (const auto& n : doomed) QF_TRY(remove_tree(dfd.get(), n));
      return ok();
    }
    if (name.rfind(".wh..wh.", 0) == 0) return ok();  // other AUFS metadata: ignored
    std::string hidden = name.substr(4);
    if (hidden.empty() || hidden == "." || hidden == "..") return refuse("a malformed whiteout");
    std::string hidden_path = dir_path.empty() ? hidden : dir_path + "/" + hidden;
    if (o_.whiteouts == Whiteouts::kOverlay) {
      QF_TRY(remove_tree(parent->get(), hidden));
      if (::mknodat(parent->get(), hidden.c_str(), S_IFCHR | 0, makedev(0, 0)) != 0) {
        return sys("mknod", errno);
      }
      return ok();
    }
    if (created_.count(hidden_path)) return ok();  // hides only lower layers
    return remove_tree(parent->get(), hidden);
  }

  // After every entry: resolve each symlink against the final tree (a later entry can change
  // what an earlier link points through) and refuse one that ends up outside.
  Result<void> check_resolved_symlink(const std::string& path) {
    entry_ = path;
    std::string target(PATH_MAX, '\0');
    ssize_t len = ::readlinkat(root_, path.c_str(), target.data(), target.size());
    if (len < 0) {
      if (errno == EINVAL || errno == ENOENT) return ok();  // replaced or removed since
      return sys("readlink", errno);
    }
    target.resize(static_cast<size_t>(len));
    if (!target.empty() && target.front() == '/') return ok();  // refused when made, or allowed
    std::vector<std::string> stack;
    auto parts = split_entry_path(path, false);
    if (!parts) return parts.error();
    stack.assign(parts->begin(), parts->end() - 1);
    std::deque<std::string> todo;
    auto push_front = [&](std::string_view t) {
      std::vector<std::string> comps;
      size_t start = 0;
      while (start <= t.size()) {
        size_t slash = t.find('/', start);
        comps.emplace_back(t.substr(start, slash == t.npos ? t.npos : slash - start));
        if (slash == t.npos) break;
        start = slash + 1;
      }
      todo.insert(todo.begin(), comps.begin(), comps.end());
    };
    push_front(target);
    int hops = 0;
    while (!todo.empty()) {
      std::string c = todo.front();
      todo.pop_front();
      if (c.empty() || c == ".") continue;
      if (c == "..") {
        if (stack.empty()) return refuse("symlink to '" + target + "' leaves the " + o_.label);
        stack.pop_back();
        continue;
      }
      stack.push_back(c);
      std::string candidate = join(stack);
      struct stat st;
      if (::fstatat(root_, candidate.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
          !S_ISLNK(st.st_mode)) {
        continue;  // a directory, a file, or nothing yet: lexical from here on
      }
      if (++hops > kMaxSymlinkHops) return refuse("symlink to '" + target + "' loops");
      std::string next(PATH_MAX, '\0');
      ssize_t n = ::readlinkat(root_, candidate.c_str(), next.data(), next.size());
      if (n < 0) return sys("readlink", errno);
      next.resize(static_cast<size_t>(n));
      stack.pop_back();
      if (!next.empty() && next.front() == '/') {
        if (!o_.allow_absolute_symlinks) {
          return refuse("symlink to '" + target + "' leads through '" + candidate +
                        "' to an absolute path");
        }
        stack.clear();
      }
      push_front(next);
    }
    return ok();
  }

  // Directories were created 0700 so that a read-only one could still be filled; now their
  // modes, owners and mtimes, deepest first.
  Result<void> apply_dir_modes() {
    for (auto it = dir_modes_.rbegin(); it != dir_modes_.rend(); ++it) {
      entry_ = it->first;
      auto parts = split_entry_path(it->first, false);
      if (!parts) return parts.error();
      auto parent = open_parent(*parts, false);
      if (!parent) return parent.error();
      Fd fd(::openat(parent->get(), parts->back().c_str(),
                     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!fd.valid()) {
        if (errno == ENOENT) continue;  // removed by a later whiteout
        return sys("open", errno);
      }
      const DirMeta& m = it->second;
      if ((m.uid != kNoId || m.gid != kNoGid) && ::fchown(fd.get(), m.uid, m.gid) != 0) {
        return sys("chown", errno);
      }
      if (::fchmod(fd.get(), m.mode) != 0) return sys("chmod", errno);
      timespec times[2] = {{0, UTIME_OMIT}, {m.mtime, 0}};
      if (::futimens(fd.get(), times) != 0) return sys("utimens", errno);
    }
    return ok();
  }

  struct DirMeta {
    mode_t mode;
    time_t mtime;
    uid_t uid;
    gid_t gid;
  };

  int root_;
  const ExtractOptions& o_;
  ExtractStats stats_;
  uint64_t declared_ = 0;
  std::string entry_;
  std::unordered_set<std::string> created_;
  std::map<std::string, DirMeta> dir_modes_;  // sorted: parents before children
  std::vector<std::string> symlinks_;         // every symlink created, for the final pass
  Fd cache_fd_;                               // the last parent directory opened, and its path
  std::string cache_path_;
};

}  // namespace

Result<std::vector<std::string>> split_entry_path(std::string_view path, bool strip_leading_slash) {
  if (!path.empty() && path.front() == '/') {
    if (!strip_leading_slash) return Error::invalid("absolute path (entries must be relative)");
    while (!path.empty() && path.front() == '/') path.remove_prefix(1);
  }
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    std::string_view c = path.substr(start, slash == path.npos ? path.npos : slash - start);
    if (c == "..") return Error::invalid("path leaves the upload");
    if (!c.empty() && c != ".") parts.emplace_back(c);
    if (slash == path.npos) break;
    start = slash + 1;
  }
  return parts;
}

Result<ExtractStats> extract_archive(int fd, const std::filesystem::path& dest,
                                     const ExtractOptions& options) {
  const std::string d = dest.string();
  if (!options.into_existing) {
    if (::mkdir(d.c_str(), 0700) != 0) return Error::sys("mkdir(" + d + ")", errno);
  }
  auto cleanup = [&](Error err) -> Error {
    if (!options.into_existing) {
      std::error_code ec;
      // Directories are still 0700 here (modes are applied last), so removal can proceed.
      std::filesystem::remove_all(dest, ec);
    }
    return err;
  };
  Fd root(::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!root.valid()) return cleanup(Error::sys("open(" + d + ")", errno));
  Extractor x(root.get(), options);
  auto r = x.run(fd);
  if (!r) {
    return cleanup(r.error());
  }
  if (!options.into_existing && ::chmod(d.c_str(), 0755) != 0) {
    return cleanup(Error::sys("chmod(" + d + ")", errno));
  }
  return r;
}

Result<ExtractStats> extract_upload(const std::filesystem::path& archive,
                                    const std::filesystem::path& dest,
                                    const ExtractLimits& limits) {
  Fd fd(::open(archive.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Error::sys("open(" + archive.string() + ")", errno);
  ExtractOptions o;
  o.limits = limits;
  return extract_archive(fd.get(), dest, o);
}

}  // namespace qufop::builder
