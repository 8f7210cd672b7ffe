#include "builder/layer.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <memory>

#include "builder/descriptor.h"

namespace qufop::builder {
namespace {

constexpr int kMaxDepth = 512;
constexpr size_t kCopyChunk = 256 << 10;
constexpr std::string_view kDefaultPath =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

using ArchivePtr = std::unique_ptr<struct archive, int (*)(struct archive*)>;

std::string archive_message(struct archive* a) {
  const char* m = archive_error_string(a);
  return m ? m : "unknown libarchive error";
}

// ---- scan ----------------------------------------------------------------------------------

bool read_opaque(int dfd) {
  char v[4];
  for (const char* name : {"trusted.overlay.opaque", "user.overlay.opaque"}) {
    ssize_t n = ::fgetxattr(dfd, name, v, sizeof v);
    if (n == 1 && v[0] == 'y') return true;
  }
  return false;
}

Result<void> scan_dir(int dfd, const std::string& prefix, bool xattrs, int depth,
                      std::vector<FsEntry>& out) {
  if (depth > kMaxDepth) {
    return Error::invalid("'" + prefix + "': more than " + std::to_string(kMaxDepth) +
                          " directory levels");
  }
  int dup = ::fcntl(dfd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return Error::sys("dup(" + prefix + ")", errno);
  DIR* dir = ::fdopendir(dup);
  if (dir == nullptr) {
    ::close(dup);
    return Error::sys("fdopendir(" + prefix + ")", errno);
  }
  std::unique_ptr<DIR, int (*)(DIR*)> closer(dir, ::closedir);
  std::vector<std::string> names;
  errno = 0;
  while (dirent* d = ::readdir(dir)) {
    std::string_view n = d->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
  }
  if (errno != 0) return Error::sys("readdir(" + prefix + ")", errno);
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    std::string path = prefix.empty() ? n : prefix + "/" + n;
    struct stat st;
    if (::fstatat(dfd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return Error::sys("stat(" + path + ")", errno);
    }
    FsEntry e;
    e.path = path;
    e.mode = st.st_mode & 07777;
    e.uid = st.st_uid;
    e.gid = st.st_gid;
    e.dev = st.st_dev;
    e.ino = st.st_ino;
    e.nlink = st.st_nlink;
    switch (st.st_mode & S_IFMT) {
      case S_IFREG:
        e.type = EntryType::kFile;
        e.size = static_cast<uint64_t>(st.st_size);
        break;
      case S_IFDIR:
        e.type = EntryType::kDir;
        break;
      case S_IFLNK: {
        e.type = EntryType::kSymlink;
        std::string target(PATH_MAX, '\0');
        ssize_t len = ::readlinkat(dfd, n.c_str(), target.data(), target.size());
        if (len < 0) return Error::sys("readlink(" + path + ")", errno);
        target.resize(static_cast<size_t>(len));
        e.link_target = std::move(target);
        break;
      }
      case S_IFIFO:
        e.type = EntryType::kFifo;
        break;
      case S_IFCHR:
        e.type = EntryType::kCharDevice;
        break;
      case S_IFBLK:
        e.type = EntryType::kBlockDevice;
        break;
      default:
        e.type = EntryType::kSocket;
        break;
    }
    e.rdev_major = major(st.st_rdev);
    e.rdev_minor = minor(st.st_rdev);
    if (e.type == EntryType::kDir) {
      int child = ::openat(dfd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (child < 0) return Error::sys("open(" + path + ")", errno);
      Fd guard(child);
      if (xattrs) e.opaque = read_opaque(child);
      out.push_back(std::move(e));
      QF_TRY(scan_dir(child, path, xattrs, depth + 1, out));
    } else {
      out.push_back(std::move(e));
    }
  }
  return ok();
}

// ---- write ---------------------------------------------------------------------------------

// Uncompressed tar bytes in: hashed for the diff_id, then gzip-compressed (a second libarchive
// writer in "raw" format, timestamp off) or passed through, into the blob.
class LayerSink {
 public:
  LayerSink(BlobWriter& blob, bool gzip) : blob_(blob), gz_(nullptr, archive_write_free) {
    if (gzip) gz_.reset(archive_write_new());
  }

  Result<void> open() {
    if (!gz_) return ok();
    struct archive* a = gz_.get();
    if (archive_write_add_filter_gzip(a) != ARCHIVE_OK ||
        archive_write_set_filter_option(a, "gzip", "timestamp", nullptr) != ARCHIVE_OK ||
        archive_write_set_format_raw(a) != ARCHIVE_OK ||
        archive_write_set_bytes_per_block(a, 64 << 10) != ARCHIVE_OK ||
        archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK ||
        archive_write_open(a, this, nullptr, &LayerSink::compressed, nullptr) != ARCHIVE_OK) {
      return Error::io("gzip: " + archive_message(a));
    }
    std::unique_ptr<archive_entry, void (*)(archive_entry*)> e(archive_entry_new(),
                                                               archive_entry_free);
    archive_entry_set_pathname(e.get(), "layer.tar");
    archive_entry_set_filetype(e.get(), AE_IFREG);
    if (archive_write_header(a, e.get()) != ARCHIVE_OK) {
      return Error::io("gzip: " + archive_message(a));
    }
    return ok();
  }

  Result<void> close() {
    if (gz_ && archive_write_close(gz_.get()) != ARCHIVE_OK) {
      if (failed_) return error_;
      return Error::io("gzip: " + archive_message(gz_.get()));
    }
    if (failed_) return error_;
    return ok();
  }

  std::string diff_id() { return diff_.digest(); }
  bool failed() const { return failed_; }
  const Error& error() const { return error_; }

  static la_ssize_t uncompressed(struct archive*, void* self, const void* buf, size_t n) {
    auto* s = static_cast<LayerSink*>(self);
    std::string_view data(static_cast<const char*>(buf), n);
    s->diff_.update(data);
    if (s->gz_) {
      la_ssize_t w = archive_write_data(s->gz_.get(), buf, n);
      if (w < 0) {
        if (!s->failed_) s->fail(Error::io("gzip: " + archive_message(s->gz_.get())));
        return -1;
      }
      return static_cast<la_ssize_t>(n);
    }
    return s->to_blob(data);
  }

  static la_ssize_t compressed(struct archive*, void* self, const void* buf, size_t n) {
    return static_cast<LayerSink*>(self)->to_blob(
        std::string_view(static_cast<const char*>(buf), n));
  }

 private:
  la_ssize_t to_blob(std::string_view data) {
    if (auto r = blob_.write(data); !r) {
      fail(r.error());
      return -1;
    }
    return static_cast<la_ssize_t>(data.size());
  }
  void fail(Error e) {
    failed_ = true;
    error_ = std::move(e);
  }

  BlobWriter& blob_;
  ArchivePtr gz_;
  Sha256 diff_;
  bool failed_ = false;
  Error error_;
};

Result<void> write_entry(struct archive* a, int root_fd, const TarEntry& t, int64_t mtime,
                         const LayerSink& sink) {
  std::unique_ptr<archive_entry, void (*)(archive_entry*)> e(archive_entry_new(),
                                                             archive_entry_free);
  archive_entry_set_pathname(e.get(),
                             t.type == EntryType::kDir ? (t.name + "/").c_str() : t.name.c_str());
  archive_entry_set_perm(e.get(), t.mode);
  archive_entry_set_uid(e.get(), t.uid);
  archive_entry_set_gid(e.get(), t.gid);
  archive_entry_set_mtime(e.get(), mtime, 0);
  switch (t.type) {
    case EntryType::kFile:
      archive_entry_set_filetype(e.get(), AE_IFREG);
      archive_entry_set_size(e.get(), static_cast<la_int64_t>(t.size));
      break;
    case EntryType::kDir:
      archive_entry_set_filetype(e.get(), AE_IFDIR);
      break;
    case EntryType::kSymlink:
      archive_entry_set_filetype(e.get(), AE_IFLNK);
      archive_entry_set_symlink(e.get(), t.link.c_str());
      break;
    case EntryType::kHardlink:
      archive_entry_set_filetype(e.get(), AE_IFREG);
      archive_entry_set_hardlink(e.get(), t.link.c_str());
      archive_entry_set_size(e.get(), 0);
      break;
    case EntryType::kFifo:
      archive_entry_set_filetype(e.get(), AE_IFIFO);
      break;
    default:
      return Error::invalid("'" + t.name + "': cannot be put in a layer");
  }
  auto fail = [&](std::string_view what) -> Error {
    if (sink.failed()) return sink.error();
    return Error::io("layer entry '" + t.name + "': " + std::string(what) + ": " +
                     archive_message(a));
  };
  if (int rc = archive_write_header(a, e.get()); rc != ARCHIVE_OK && rc != ARCHIVE_WARN)
    return fail("writing the header");
  if (t.type != EntryType::kFile || t.size == 0) return ok();

  Fd fd(::openat(root_fd, t.source.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return Error::sys("open(" + t.source + ")", errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Error::sys("stat(" + t.source + ")", errno);
  if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != t.size) {
    return Error{"conflict", "'" + t.source + "' changed while the layer was written", 0};
  }
  std::vector<char> buf(kCopyChunk);
  uint64_t left = t.size;
  while (left > 0) {
    ssize_t n = ::read(fd.get(), buf.data(), std::min<uint64_t>(buf.size(), left));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::sys("read(" + t.source + ")", errno);
    if (n == 0) {
      return Error{"conflict", "'" + t.source + "' shrank while the layer was written", 0};
    }
    if (archive_write_data(a, buf.data(), static_cast<size_t>(n)) < 0) return fail("writing");
    left -= static_cast<uint64_t>(n);
  }
  return ok();
}

std::string parent_of(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}
std::string base_of(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}
std::string child_of(const std::string& dir, std::string_view name) {
  return dir.empty() ? std::string(name) : dir + "/" + std::string(name);
}

}  // namespace

Result<std::vector<FsEntry>> scan_tree(const std::filesystem::path& root, bool overlay_xattrs) {
  Fd fd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return Error::sys("open(" + root.string() + ")", errno);
  std::vector<FsEntry> out;
  auto r = scan_dir(fd.get(), "", overlay_xattrs, 0, out);
  if (!r) return r.error().wrap("scanning " + root.string());
  return out;
}

Result<std::vector<TarEntry>> plan_layer(std::vector<FsEntry> entries,
                                         const LayerOptions& options) {
  std::sort(entries.begin(), entries.end(),
            [](const FsEntry& a, const FsEntry& b) { return a.path < b.path; });
  auto owner = [&](uint32_t id) -> uint32_t {
    if (!options.preserve_owner) return 0;
    return id >= options.id_shift ? id - options.id_shift : id;
  };
  std::vector<TarEntry> out;
  std::map<std::pair<uint64_t, uint64_t>, std::string> first_link;  // (dev, ino) -> name
  for (const auto& e : entries) {
    std::string name = base_of(e.path);
    if (e.path.empty() || name.empty()) return Error::invalid("an entry with an empty name");
    if (name.rfind(".wh.", 0) == 0) {
      return Error::invalid("'" + e.path +
                            "': names starting with .wh. cannot be put in a layer (they mark "
                            "deletions)");
    }
    TarEntry t;
    t.name = e.path;
    t.mode = e.mode & 07777;
    t.uid = owner(e.uid);
    t.gid = owner(e.gid);
    switch (e.type) {
      case EntryType::kCharDevice:
        if (options.overlay_upper && e.rdev_major == 0 && e.rdev_minor == 0) {
          t.name = child_of(parent_of(e.path), ".wh." + name);
          t.type = EntryType::kFile;
          t.mode = 0600;
          t.uid = t.gid = 0;
          out.push_back(std::move(t));
          continue;
        }
        return Error::invalid("'" + e.path + "': device files cannot be put in a layer");
      case EntryType::kBlockDevice:
        return Error::invalid("'" + e.path + "': device files cannot be put in a layer");
      case EntryType::kSocket:
        continue;  // a socket is a live object, not content: tar has no way to hold it
      case EntryType::kHardlink:
        return Error::invalid("'" + e.path + "': scanned entries are never hard links");
      case EntryType::kDir:
        t.type = EntryType::kDir;
        out.push_back(t);
        if (options.overlay_upper && e.opaque) {
          TarEntry opq;
          opq.name = child_of(e.path, ".wh..wh..opq");
          opq.type = EntryType::kFile;
          opq.mode = 0600;
          out.push_back(std::move(opq));
        }
        continue;
      case EntryType::kSymlink:
        t.type = EntryType::kSymlink;
        t.link = e.link_target;
        break;
      case EntryType::kFifo:
        t.type = EntryType::kFifo;
        break;
      case EntryType::kFile:
        t.type = EntryType::kFile;
        t.size = e.size;
        t.source = e.path;
        if (e.nlink > 1) {
          auto [it, fresh] = first_link.try_emplace({e.dev, e.ino}, e.path);
          if (!fresh) {
            t.type = EntryType::kHardlink;
            t.link = it->second;
            t.size = 0;
            t.source.clear();
          }
        }
        break;
    }
    out.push_back(std::move(t));
  }
  // The whiteout names sort among their siblings; keep the whole list in byte order.
  std::stable_sort(out.begin(), out.end(),
                   [](const TarEntry& a, const TarEntry& b) { return a.name < b.name; });
  return out;
}

Result<Layer> write_layer(const OciStore& store, const std::filesystem::path& root,
                          const std::vector<TarEntry>& entries, const LayerOptions& options) {
  Fd root_fd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root_fd.valid()) return Error::sys("open(" + root.string() + ")", errno);
  auto blob = store.begin_blob();
  if (!blob) return blob.error();
  LayerSink sink(*blob, options.gzip);
  QF_TRY(sink.open());
  ArchivePtr a(archive_write_new(), archive_write_free);
  if (archive_write_set_format_pax_restricted(a.get()) != ARCHIVE_OK ||
      archive_write_add_filter_none(a.get()) != ARCHIVE_OK ||
      archive_write_open(a.get(), &sink, nullptr, &LayerSink::uncompressed, nullptr) !=
          ARCHIVE_OK) {
    return Error::io("layer: " + archive_message(a.get()));
  }
  for (const auto& t : entries) QF_TRY(write_entry(a.get(), root_fd.get(), t, options.mtime, sink));
  if (archive_write_close(a.get()) != ARCHIVE_OK) {
    if (sink.failed()) return sink.error();
    return Error::io("layer: " + archive_message(a.get()));
  }
  QF_TRY(sink.close());
  Layer layer;
  layer.diff_id = sink.diff_id();
  auto committed = blob->commit();
  if (!committed) return committed.error();
  layer.blob = std::move(*committed);
  layer.blob.media_type = std::string(options.gzip ? kMediaLayerGzip : kMediaLayerTar);
  return layer;
}

Result<Layer> make_layer(const OciStore& store, const std::filesystem::path& dir,
                         const LayerOptions& options) {
  auto scanned = scan_tree(dir, options.overlay_upper);
  if (!scanned) return scanned.error();
  auto plan = plan_layer(std::move(*scanned), options);
  if (!plan) return plan.error().wrap("layer of " + dir.string());
  return write_layer(store, dir, *plan, options);
}

Result<BlobRef> import_rootfs_tarball(const OciStore& store, std::string_view ref_text,
                                      const std::filesystem::path& tarball) {
  auto ref = parse_image_ref(ref_text);
  if (!ref) return ref.error().wrap("import");
  if (ref->scratch || !ref->digest.empty()) {
    return Error::invalid("import: name the image NAME[:TAG], not '" + std::string(ref_text) + "'");
  }
  Fd in(::open(tarball.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) return Error::sys("open(" + tarball.string() + ")", errno);
  ArchivePtr r(archive_read_new(), archive_read_free);
  archive_read_support_format_tar(r.get());
  archive_read_support_filter_all(r.get());
  if (archive_read_open_fd(r.get(), in.get(), 256 << 10) != ARCHIVE_OK) {
    return Error::invalid("import " + tarball.string() + ": " + archive_message(r.get()));
  }
  auto blob = store.begin_blob();
  if (!blob) return blob.error();
  LayerSink sink(*blob, true);
  QF_TRY(sink.open());
  ArchivePtr w(archive_write_new(), archive_write_free);
  if (archive_write_set_format_pax_restricted(w.get()) != ARCHIVE_OK ||
      archive_write_add_filter_none(w.get()) != ARCHIVE_OK ||
      archive_write_open(w.get(), &sink, nullptr, &LayerSink::uncompressed, nullptr) !=
          ARCHIVE_OK) {
    return Error::io("import: " + archive_message(w.get()));
  }
  std::vector<char> buf(kCopyChunk);
  size_t count = 0;
  for (;;) {
    archive_entry* e = nullptr;
    int rc = archive_read_next_header(r.get(), &e);
    if (rc == ARCHIVE_EOF) break;
    if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) {
      return Error::invalid("import " + tarball.string() + ": " + archive_message(r.get()));
    }
    const char* raw = archive_entry_pathname(e);
    std::string name = raw ? raw : "";
    auto parts = split_entry_path(name, true);
    if (!parts) return Error::invalid("import: entry '" + name + "': " + parts.error().message);
    if (parts->empty()) continue;  // "./" itself
    std::string clean;
    for (const auto& p : *parts) clean += (clean.empty() ? "" : "/") + p;
    std::unique_ptr<archive_entry, void (*)(archive_entry*)> out(archive_entry_clone(e),
                                                                 archive_entry_free);
    archive_entry_set_pathname(
        out.get(), archive_entry_filetype(e) == AE_IFDIR ? (clean + "/").c_str() : clean.c_str());
    if (const char* hl = archive_entry_hardlink(e)) {
      auto hparts = split_entry_path(hl, true);
      if (!hparts || hparts->empty()) {
        return Error::invalid("import: entry '" + name + "': bad hard link '" + hl + "'");
      }
      std::string target;
      for (const auto& p : *hparts) target += (target.empty() ? "" : "/") + p;
      archive_entry_set_hardlink(out.get(), target.c_str());
    }
    archive_entry_set_mtime(out.get(), archive_entry_mtime(e), 0);
    archive_entry_unset_atime(out.get());
    archive_entry_unset_ctime(out.get());
    archive_entry_unset_birthtime(out.get());
    archive_entry_set_uname(out.get(), nullptr);
    archive_entry_set_gname(out.get(), nullptr);
    archive_entry_sparse_clear(out.get());
    if (int wrc = archive_write_header(w.get(), out.get());
        wrc != ARCHIVE_OK && wrc != ARCHIVE_WARN) {
      if (sink.failed()) return sink.error();
      return Error::io("import: entry '" + name + "': " + archive_message(w.get()));
    }
    if (archive_entry_size(out.get()) > 0) {
      for (;;) {
        la_ssize_t n = archive_read_data(r.get(), buf.data(), buf.size());
        if (n < 0) {
          return Error::invalid("import " + tarball.string() + ": entry '" + name +
                                "': " + archive_message(r.get()));
        }
        if (n == 0) break;
        if (archive_write_data(w.get(), buf.data(), static_cast<size_t>(n)) < 0) {
          if (sink.failed()) return sink.error();
          return Error::io("import: entry '" + name + "': " + archive_message(w.get()));
        }
      }
    }
    ++count;
  }
  if (count == 0) return Error::invalid("import " + tarball.string() + ": the archive is empty");
  if (archive_write_close(w.get()) != ARCHIVE_OK) {
    if (sink.failed()) return sink.error();
    return Error::io("import: " + archive_message(w.get()));
  }
  QF_TRY(sink.close());
  std::string diff_id = sink.diff_id();
  auto layer = blob->commit();
  if (!layer) return layer.error();
  layer->media_type = std::string(kMediaLayerGzip);

  ImageConfig config;
  config.architecture = host_architecture();
  config.env = {std::string(kDefaultPath)};
  config.diff_ids = {diff_id};
  auto config_ref = store.put_config(config);
  if (!config_ref) return config_ref.error();
  Manifest m;
  m.config = *config_ref;
  m.layers = {*layer};
  auto manifest = store.put_manifest(m);
  if (!manifest) return manifest.error();
  QF_TRY(store.tag(ref->name, ref->tag, *manifest));
  return manifest;
}

ExtractOptions layer_extract_options(Whiteouts mode) {
  ExtractOptions o;
  o.label = "layer";
  o.limits.max_entries = 1'000'000;
  o.limits.max_bytes = 64ull << 30;
  o.limits.max_ratio = 0;  // zero-filled files compress far beyond 100 in real images
  o.allow_absolute_symlinks = true;
  o.check_symlink_escape = false;  // a layer's links resolve inside the container's root
  o.strip_leading_slash = true;
  o.keep_setid = true;
  o.keep_owner = ::geteuid() == 0;
  o.allow_fifos = true;
  o.skip_devices = true;
  o.whiteouts = mode;
  o.into_existing = mode == Whiteouts::kApply;
  return o;
}

Result<ExtractStats> unpack_layer(const OciStore& store, std::string_view digest,
                                  const std::filesystem::path& dir, const ExtractOptions& options) {
  auto fd = store.open_blob(digest);
  if (!fd) return fd.error();
  auto r = extract_archive(fd->get(), dir, options);
  if (!r) return r.error().wrap("unpacking " + std::string(digest));
  return r;
}

}  // namespace qufop::builder
