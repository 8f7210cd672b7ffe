// Layers: reproducible tarballs, overlay whiteouts, rootfs import, unpacking.
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>

#include "builder/fsutil.h"
#include "builder/layer.h"
#include "tests/test_builder_util.h"

namespace qufop::builder {
namespace {

namespace fs = std::filesystem;
using testing::read_file;
using testing::write_file;

struct Listed {
  std::string name;
  mode_t type;
  mode_t perm;
  int64_t uid, gid, mtime, size;
  std::string link;
  bool has_uname;
};

// Every entry of a stored layer, as a tar reader sees it.
std::vector<Listed> list_layer(const OciStore& store, const std::string& digest) {
  std::vector<Listed> out;
  std::unique_ptr<archive, int (*)(archive*)> a(archive_read_new(), archive_read_free);
  archive_read_support_format_tar(a.get());
  archive_read_support_filter_gzip(a.get());
  EXPECT_EQ(archive_read_open_filename(a.get(), store.blob_path(digest).c_str(), 65536),
            ARCHIVE_OK);
  archive_entry* e;
  while (archive_read_next_header(a.get(), &e) == ARCHIVE_OK) {
    const char* sl = archive_entry_symlink(e);
    const char* hl = archive_entry_hardlink(e);
    out.push_back({archive_entry_pathname(e), archive_entry_filetype(e), archive_entry_perm(e),
                   archive_entry_uid(e), archive_entry_gid(e), archive_entry_mtime(e),
                   archive_entry_size(e), sl ? sl : (hl ? hl : ""),
                   archive_entry_uname(e) != nullptr && *archive_entry_uname(e) != '\0'});
    EXPECT_FALSE(archive_entry_atime_is_set(e)) << out.back().name;
    EXPECT_FALSE(archive_entry_ctime_is_set(e)) << out.back().name;
  }
  return out;
}

std::vector<std::string> names(const std::vector<Listed>& l) {
  std::vector<std::string> n;
  for (const auto& x : l) n.push_back(x.name);
  return n;
}

class LayerTar : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = TempDir::make("qufop-layer-");
    ASSERT_TRUE(t) << t.error().message;
    tmp_ = std::make_unique<TempDir>(std::move(*t));
    auto s = OciStore::open(tmp_->path() + "/store");
    ASSERT_TRUE(s) << s.error().message;
    store_ = std::make_unique<OciStore>(std::move(*s));
  }
  std::string dir(const std::string& name) {
    std::string p = tmp_->path() + "/" + name;
    fs::create_directories(p);
    return p;
  }
  // A small tree; `mtime` is stamped on every file, `reverse` creates in the other order.
  std::string tree(const std::string& name, time_t mtime, bool reverse) {
    std::string root = dir(name);
    std::vector<std::function<void()>> steps = {
        [&] { fs::create_directories(root + "/app/bin"); },
        [&] { write_file(root + "/app/bin/ufop", "#!/bin/sh\nexec true\n"); },
        [&] { write_file(root + "/app/a-file", "a"); },
        [&] { write_file(root + "/z", std::string(300000, 'z')); },
        [&] { fs::create_symlink("bin/ufop", root + "/app/run"); },
    };
    if (reverse) std::reverse(steps.begin() + 1, steps.end());
    for (auto& s : steps) s();
    fs::permissions(root + "/app/bin/ufop", fs::perms(0755));
    fs::create_hard_link(root + "/app/a-file", root + "/app/b-link");
    for (const auto& e : fs::recursive_directory_iterator(root)) {
      timespec t[2] = {{mtime, 0}, {mtime, 0}};
      ::utimensat(AT_FDCWD, e.path().c_str(), t, AT_SYMLINK_NOFOLLOW);
    }
    return root;
  }

  std::unique_ptr<TempDir> tmp_;
  std::unique_ptr<OciStore> store_;
};

TEST_F(LayerTar, SameTreeSameDigest) {
  auto a = make_layer(*store_, tree("one", 1000, false));
  auto b = make_layer(*store_, tree("two", 2000000000, true));
  ASSERT_TRUE(a) << a.error().message;
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ(a->blob.digest, b->blob.digest);
  EXPECT_EQ(a->diff_id, b->diff_id);
  EXPECT_EQ(a->blob.media_type, kMediaLayerGzip);
  EXPECT_TRUE(store_->verify_blob(a->blob.digest));
  // A changed byte changes the digest.
  std::string three = tree("three", 1000, false);
  write_file(three + "/app/a-file", "b");
  auto c = make_layer(*store_, three);
  ASSERT_TRUE(c);
  EXPECT_NE(c->blob.digest, a->blob.digest);
  // Uncompressed: the blob is the tar, and its digest is the diff_id.
  LayerOptions plain;
  plain.gzip = false;
  auto d = make_layer(*store_, tree("four", 5, false), plain);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->blob.media_type, kMediaLayerTar);
  EXPECT_EQ(d->blob.digest, d->diff_id);
  EXPECT_EQ(d->diff_id, a->diff_id);
}

TEST_F(LayerTar, OwnersOnDiskDoNotMatter) {
  if (::geteuid() != 0) GTEST_SKIP() << "chown needs root";
  std::string one = tree("one", 1000, false);
  std::string two = tree("two", 1000, false);
  ASSERT_EQ(::lchown((two + "/app/a-file").c_str(), 1234, 5678), 0);
  ASSERT_EQ(::lchown((two + "/app/run").c_str(), 1234, 5678), 0);
  auto a = make_layer(*store_, one);
  auto b = make_layer(*store_, two);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->blob.digest, b->blob.digest);
  LayerOptions keep;
  keep.preserve_owner = true;
  keep.id_shift = 1000;
  auto c = make_layer(*store_, two, keep);
  ASSERT_TRUE(c);
  for (const auto& e : list_layer(*store_, c->blob.digest)) {
    if (e.name == "app/a-file") {
      EXPECT_EQ(e.uid, 234);
      EXPECT_EQ(e.gid, 4678);
    }
  }
}

TEST_F(LayerTar, TarballIsNormalised) {
  auto l = make_layer(*store_, tree("one", 1000, false));
  ASSERT_TRUE(l) << l.error().message;
  auto entries = list_layer(*store_, l->blob.digest);
  EXPECT_EQ(names(entries), (std::vector<std::string>{"app/", "app/a-file", "app/b-link",
                                                      "app/bin/", "app/bin/ufop", "app/run", "z"}));
  for (const auto& e : entries) {
    EXPECT_EQ(e.mtime, 0) << e.name;
    EXPECT_EQ(e.uid, 0) << e.name;
    EXPECT_EQ(e.gid, 0) << e.name;
    EXPECT_FALSE(e.has_uname) << e.name;
  }
  EXPECT_EQ(entries[2].link, "app/a-file") << "the second name of a file is a hard link";
  EXPECT_EQ(entries[4].perm, 0755u);
  EXPECT_EQ(entries[5].type, static_cast<mode_t>(AE_IFLNK));
  EXPECT_EQ(entries[5].link, "bin/ufop");
  EXPECT_EQ(entries[6].size, 300000);
  // gzip header: no modification time, no file name, fixed OS byte.
  std::string head = read_file(store_->blob_path(l->blob.digest)).substr(0, 10);
  EXPECT_EQ(head.substr(0, 3), std::string("\x1f\x8b\x08", 3));
  EXPECT_EQ(head[3], 0) << "no FNAME/FCOMMENT flags";
  EXPECT_EQ(head.substr(4, 4), std::string(4, '\0')) << "MTIME is 0";
}

TEST_F(LayerTar, LongAndUnusualNamesAreDeterministic) {
  // Long names need pax headers; their names must not carry a pid or a time.
  std::string root = dir("long");
  std::string deep = root + "/" + std::string(120, 'd');
  fs::create_directories(deep);
  write_file(deep + "/" + std::string(150, 'f'), "x");
  write_file(root + "/caf\xc3\xa9", "utf-8");
  auto a = make_layer(*store_, root);
  ASSERT_TRUE(a) << a.error().message;
  // The same again from a child process (another pid).
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto b = make_layer(*store_, root);
    std::_Exit(b && b->blob.digest == a->blob.digest ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  auto entries = list_layer(*store_, a->blob.digest);
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[2].name, std::string(120, 'd') + "/" + std::string(150, 'f'));
}

TEST_F(LayerTar, OverlayWhiteoutsConvertedFromADescription) {
  LayerOptions o;
  o.overlay_upper = true;
  std::vector<FsEntry> upper = {
      {.path = "etc", .type = EntryType::kDir, .mode = 0755},
      {.path = "etc/gone", .type = EntryType::kCharDevice, .mode = 0},
      {.path = "var", .type = EntryType::kDir, .mode = 0750, .opaque = true},
      {.path = "var/new", .type = EntryType::kFile, .mode = 0644, .size = 3},
      {.path = "run.sock", .type = EntryType::kSocket},
  };
  auto plan = plan_layer(upper, o);
  ASSERT_TRUE(plan) << plan.error().message;
  std::vector<TarEntry> want = {
      {.name = "etc", .type = EntryType::kDir, .mode = 0755},
      {.name = "etc/.wh.gone", .type = EntryType::kFile, .mode = 0600},
      {.name = "var", .type = EntryType::kDir, .mode = 0750},
      {.name = "var/.wh..wh..opq", .type = EntryType::kFile, .mode = 0600},
      {.name = "var/new", .type = EntryType::kFile, .mode = 0644, .size = 3, .source = "var/new"},
  };
  EXPECT_EQ(*plan, want);

  // Outside an overlay upper dir the same char device is a device: refused.
  auto plain = plan_layer(upper, LayerOptions{});
  ASSERT_FALSE(plain);
  EXPECT_EQ(plain.error().message, "'etc/gone': device files cannot be put in a layer");
  auto real_dev = plan_layer(
      {{.path = "null", .type = EntryType::kCharDevice, .rdev_major = 1, .rdev_minor = 3}}, o);
  ASSERT_FALSE(real_dev);
  auto wh = plan_layer({{.path = "a/.wh.b", .type = EntryType::kFile}}, o);
  ASSERT_FALSE(wh);
  EXPECT_EQ(wh.error().message,
            "'a/.wh.b': names starting with .wh. cannot be put in a layer (they mark deletions)");
}

TEST_F(LayerTar, OverlayWhiteoutsConvertedFromARealUpperDir) {
  if (::geteuid() != 0) GTEST_SKIP() << "a 0/0 char device and trusted.* xattrs need root";
  std::string upper = dir("upper");
  fs::create_directories(upper + "/etc");
  fs::create_directories(upper + "/var");
  write_file(upper + "/var/new", "new");
  ASSERT_EQ(::mknod((upper + "/etc/gone").c_str(), S_IFCHR | 0, makedev(0, 0)), 0);
  if (::setxattr((upper + "/var").c_str(), "trusted.overlay.opaque", "y", 1, 0) != 0) {
    GTEST_SKIP() << "trusted xattrs unsupported here: " << std::strerror(errno);
  }
  LayerOptions o;
  o.overlay_upper = true;
  auto l = make_layer(*store_, upper, o);
  ASSERT_TRUE(l) << l.error().message;
  EXPECT_EQ(
      names(list_layer(*store_, l->blob.digest)),
      (std::vector<std::string>{"etc/", "etc/.wh.gone", "var/", "var/.wh..wh..opq", "var/new"}));
}

// A rootfs tarball as a distribution would ship one.
void write_rootfs(const std::string& path) {
  testing::write_tar(path,
                     {{"./", 'd', "", "", 0755},
                      {"./bin/", 'd', "", "", 0755},
                      {"./bin/busybox", 'f', "#!/bin/false\n", "", 0755},
                      {"./bin/sh", 'l', "", "/bin/busybox"},
                      {"./bin/ls", 'h', "", "./bin/busybox"},
                      {"./etc/", 'd', "", "", 0755},
                      {"./etc/passwd", 'f', "root:x:0:0:root:/root:/bin/sh\n", "", 0644},
                      {"./usr/bin/su", 'f', "su", "", 04755},
                      {"./tmp/", 'd', "", "", 01777}},
                     true);
}

bool have(const char* tool) {
  std::string cmd = std::string("command -v ") + tool + " >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

TEST_F(LayerTar, ImportRootfsTarball) {
  std::string tarball = tmp_->path() + "/rootfs.tar.gz";
  write_rootfs(tarball);
  auto m = import_rootfs_tarball(*store_, "mini:1", tarball);
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(store_->resolve("mini:1")->digest, m->digest);
  auto manifest = store_->read_manifest(m->digest);
  ASSERT_TRUE(manifest);
  ASSERT_EQ(manifest->layers.size(), 1u);
  EXPECT_EQ(manifest->layers[0].media_type, kMediaLayerGzip);
  auto config = store_->read_config(manifest->config.digest);
  ASSERT_TRUE(config);
  EXPECT_EQ(config->os, "linux");
  EXPECT_EQ(config->env.size(), 1u);
  ASSERT_EQ(config->diff_ids.size(), 1u);
  auto entries = list_layer(*store_, manifest->layers[0].digest);
  EXPECT_EQ(names(entries), (std::vector<std::string>{"bin/", "bin/busybox", "bin/sh", "bin/ls",
                                                      "etc/", "etc/passwd", "usr/bin/su", "tmp/"}));
  EXPECT_EQ(entries[3].link, "bin/busybox");
  EXPECT_EQ(entries[6].perm, 04755u) << "a base image keeps its setuid bits";
  EXPECT_EQ(entries[7].perm, 01777u);
  // Importing the same tarball again gives the same image.
  auto again = import_rootfs_tarball(*store_, "mini:2", tarball);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->digest, m->digest);

  std::string bad = tmp_->path() + "/bad.tar";
  testing::write_tar(bad, {{"../evil", 'f', "x"}});
  auto r = import_rootfs_tarball(*store_, "bad", bad);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "import: entry '../evil': path leaves the upload");
  EXPECT_FALSE(store_->resolve("bad"));
  EXPECT_FALSE(import_rootfs_tarball(*store_, "Bad Name", tarball));
}

TEST_F(LayerTar, ImportedImageAcceptedBySkopeo) {
  if (!have("skopeo")) GTEST_SKIP() << "skopeo is not installed (scripts/bootstrap installs it)";
  std::string tarball = tmp_->path() + "/rootfs.tar.gz";
  write_rootfs(tarball);
  ASSERT_TRUE(import_rootfs_tarball(*store_, "mini:1", tarball));
  std::string out = tmp_->path() + "/skopeo.json";
  std::string cmd = "skopeo inspect oci:" + store_->root().string() + ":mini:1 >" + out + " 2>&1";
  int rc = std::system(cmd.c_str());
  EXPECT_EQ(rc, 0) << read_file(out);
  EXPECT_NE(read_file(out).find("\"Os\": \"linux\""), std::string::npos) << read_file(out);
  // A copy reads every blob and checks its digest.
  cmd = "skopeo copy -q oci:" + store_->root().string() + ":mini:1 dir:" + tmp_->path() +
        "/copy >" + out + " 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << read_file(out);
}

TEST_F(LayerTar, ImportedImageUnpackedByUmoci) {
  if (!have("umoci")) GTEST_SKIP() << "umoci is not installed (scripts/bootstrap installs it)";
  if (::geteuid() != 0) GTEST_SKIP() << "umoci unpack without --rootless needs root";
  std::string tarball = tmp_->path() + "/rootfs.tar.gz";
  write_rootfs(tarball);
  ASSERT_TRUE(import_rootfs_tarball(*store_, "mini:1", tarball));
  std::string bundle = tmp_->path() + "/bundle";
  std::string log = tmp_->path() + "/umoci.log";
  std::string cmd = "umoci unpack --image " + store_->root().string() + ":mini:1 " + bundle + " >" +
                    log + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_file(log);
  EXPECT_EQ(read_file(bundle + "/rootfs/etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
  EXPECT_EQ(fs::read_symlink(bundle + "/rootfs/bin/sh"), "/bin/busybox");
  EXPECT_TRUE(fs::exists(bundle + "/config.json"));
}

TEST_F(LayerTar, UnpackAppliesWhiteouts) {
  // Lower layer from a tree; upper layer written from entries (whiteouts need no root then).
  std::string lower = dir("lower");
  fs::create_directories(lower + "/etc");
  fs::create_directories(lower + "/var/cache");
  write_file(lower + "/etc/keep", "keep");
  write_file(lower + "/etc/gone", "gone");
  write_file(lower + "/var/cache/old", "old");
  fs::create_symlink("/etc/keep", lower + "/abs-link");
  auto l1 = make_layer(*store_, lower);
  ASSERT_TRUE(l1) << l1.error().message;
  std::string upper_src = dir("upper-src");
  write_file(upper_src + "/new", "new");
  std::vector<TarEntry> upper = {
      {.name = "etc", .type = EntryType::kDir, .mode = 0755},
      {.name = "etc/.wh.gone", .type = EntryType::kFile, .mode = 0600},
      {.name = "var", .type = EntryType::kDir, .mode = 0755},
      {.name = "var/.wh..wh..opq", .type = EntryType::kFile, .mode = 0600},
      {.name = "var/new", .type = EntryType::kFile, .mode = 0644, .size = 3, .source = "new"},
  };
  auto l2 = write_layer(*store_, upper_src, upper, LayerOptions{});
  ASSERT_TRUE(l2) << l2.error().message;

  std::string rootfs = dir("rootfs");
  ExtractOptions apply = layer_extract_options(Whiteouts::kApply);
  ASSERT_TRUE(unpack_layer(*store_, l1->blob.digest, rootfs, apply));
  EXPECT_EQ(fs::read_symlink(rootfs + "/abs-link"), "/etc/keep") << "absolute links kept";
  auto r = unpack_layer(*store_, l2->blob.digest, rootfs, apply);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(read_file(rootfs + "/etc/keep"), "keep");
  EXPECT_FALSE(fs::exists(rootfs + "/etc/gone"));
  EXPECT_FALSE(fs::exists(rootfs + "/etc/.wh.gone"));
  EXPECT_FALSE(fs::exists(rootfs + "/var/cache"));
  EXPECT_EQ(read_file(rootfs + "/var/new"), "new");
  EXPECT_FALSE(fs::exists(rootfs + "/var/.wh..wh..opq"));

  if (::geteuid() != 0) return;
  // As root: the layer as an overlay lowerdir of its own, whiteouts in overlayfs' format.
  std::string lowerdir = tmp_->path() + "/lowerdir";
  auto o =
      unpack_layer(*store_, l2->blob.digest, lowerdir, layer_extract_options(Whiteouts::kOverlay));
  if (!o && o.error().message.find("trusted.overlay.opaque") != std::string::npos) {
    GTEST_SKIP() << "trusted xattrs unsupported here: " << o.error().message;
  }
  ASSERT_TRUE(o) << o.error().message;
  struct stat st;
  ASSERT_EQ(::lstat((lowerdir + "/etc/gone").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(0, 0));
  char v[4] = {};
  EXPECT_EQ(::getxattr((lowerdir + "/var").c_str(), "trusted.overlay.opaque", v, sizeof v), 1);
  EXPECT_EQ(v[0], 'y');
}

TEST_F(LayerTar, UnpackSkipsDeviceFiles) {
  // An imported rootfs may carry /dev nodes; they are not created on unpack.
  std::string tarball = tmp_->path() + "/with-dev.tar";
  testing::write_tar(tarball, {{"dev/null", 'c'}, {"etc/hostname", 'f', "box\n"}});
  auto m = import_rootfs_tarball(*store_, "withdev", tarball);
  ASSERT_TRUE(m) << m.error().message;
  auto manifest = store_->read_manifest(m->digest);
  ASSERT_TRUE(manifest);
  std::string out = tmp_->path() + "/unpacked";
  auto r = unpack_layer(*store_, manifest->layers[0].digest, out,
                        layer_extract_options(Whiteouts::kOverlay));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(fs::exists(out + "/dev/null"));
  EXPECT_EQ(read_file(out + "/etc/hostname"), "box\n");
}

TEST_F(LayerTar, UnpackCorruptOrMissingLayer) {
  auto r = unpack_layer(*store_, sha256_digest("absent"), dir("x") + "/y",
                        layer_extract_options(Whiteouts::kOverlay));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, "not_found");
  // A truncated blob fails to unpack and leaves no partial directory.
  auto l = make_layer(*store_, tree("src", 0, false));
  ASSERT_TRUE(l);
  fs::resize_file(store_->blob_path(l->blob.digest), l->blob.size / 2);
  std::string out = tmp_->path() + "/partial";
  r = unpack_layer(*store_, l->blob.digest, out, layer_extract_options(Whiteouts::kOverlay));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("unpacking " + l->blob.digest), std::string::npos)
      << r.error().message;
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace qufop::builder
