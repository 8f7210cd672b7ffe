// One test per attack on the upload extractor, and a good archive extracted exactly.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <regex>

#include "builder/extract.h"
#include "builder/fsutil.h"
#include "tests/test_builder_util.h"

namespace qufop::builder {
namespace {

namespace fs = std::filesystem;
using testing::TarItem;
using testing::write_tar;

class UploadExtract : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = TempDir::make("qufop-extract-");
    ASSERT_TRUE(t) << t.error().message;
    tmp_ = std::make_unique<TempDir>(std::move(*t));
    archive_ = tmp_->path() + "/upload.tar";
    dest_ = tmp_->path() + "/out";
  }

  // Extracts the items; returns the error message or "" on success.
  std::string extract(const std::vector<TarItem>& items, bool gzip = false,
                      const ExtractLimits& limits = {}) {
    write_tar(archive_, items, gzip);
    return extract_file(limits);
  }
  std::string extract_file(const ExtractLimits& limits = {}) {
    auto r = extract_upload(archive_, dest_, limits);
    if (r) return "";
    EXPECT_FALSE(fs::exists(dest_)) << "a refused upload must leave nothing behind";
    return r.error().message;
  }
  mode_t mode(const std::string& rel) {
    struct stat st;
    EXPECT_EQ(::lstat((dest_ + "/" + rel).c_str(), &st), 0) << rel;
    return st.st_mode;
  }

  std::unique_ptr<TempDir> tmp_;
  std::string archive_;
  std::string dest_;
};

TEST_F(UploadExtract, GoodArchiveExtractedExactly) {
  for (bool gzip : {false, true}) {
    SCOPED_TRACE(gzip ? "tar.gz" : "tar");
    dest_ = tmp_->path() + (gzip ? "/out-gz" : "/out-tar");
    ASSERT_EQ(extract({{"./", 'd', "", "", 0755},
                       {"./ufop.yaml", 'f', "image: busybox\nrun: /app/x\n", "", 0644},
                       {"./bin/", 'd', "", "", 0750},
                       {"./bin/tool", 'f', "#!/bin/sh\necho hi\n", "", 0755},
                       {"./bin/suid", 'f', "x", "", 04755},
                       {"./bin/sgid", 'f', "x", "", 02711},
                       {"./data/a.txt", 'f', std::string(100000, 'a'), "", 0600},
                       {"./data/link", 'l', "", "a.txt"},
                       {"./lib/up", 'l', "", "../data/a.txt"},
                       {"./data/hard", 'h', "", "data/a.txt"},
                       {"./empty", 'f', "", "", 0444},
                       {"./ro/", 'd', "", "", 0555},
                       {"./ro/inside", 'f', "in", "", 0644}},
                      gzip),
              "");
    EXPECT_EQ(testing::read_file(dest_ + "/ufop.yaml"), "image: busybox\nrun: /app/x\n");
    EXPECT_EQ(testing::read_file(dest_ + "/bin/tool"), "#!/bin/sh\necho hi\n");
    EXPECT_EQ(testing::read_file(dest_ + "/data/a.txt"), std::string(100000, 'a'));
    EXPECT_EQ(mode("bin") & 07777, 0750u);
    EXPECT_EQ(mode("bin/tool") & 07777, 0755u);
    EXPECT_EQ(mode("bin/suid") & 07777, 0755u) << "setuid stripped";
    EXPECT_EQ(mode("bin/sgid") & 07777, 0711u) << "setgid stripped";
    EXPECT_EQ(mode("data/a.txt") & 07777, 0600u);
    EXPECT_EQ(mode("empty") & 07777, 0444u);
    EXPECT_EQ(mode("ro") & 07777, 0555u);
    EXPECT_EQ(testing::read_file(dest_ + "/ro/inside"), "in");
    EXPECT_TRUE(S_ISDIR(mode("lib"))) << "implicit parents are created";
    EXPECT_TRUE(S_ISLNK(mode("data/link")));
    EXPECT_EQ(fs::read_symlink(dest_ + "/data/link"), "a.txt");
    EXPECT_EQ(fs::read_symlink(dest_ + "/lib/up"), "../data/a.txt");
    EXPECT_EQ(testing::read_file(dest_ + "/lib/up"), std::string(100000, 'a'));
    struct stat a, h;
    ASSERT_EQ(::stat((dest_ + "/data/a.txt").c_str(), &a), 0);
    ASSERT_EQ(::stat((dest_ + "/data/hard").c_str(), &h), 0);
    EXPECT_EQ(a.st_ino, h.st_ino);
    struct stat st;
    ASSERT_EQ(::stat((dest_ + "/bin/tool").c_str(), &st), 0);
    EXPECT_EQ(st.st_mtime, 1700000000);
  }
}

TEST_F(UploadExtract, AbsolutePathRefused) {
  EXPECT_EQ(extract({{"ok", 'f', "x"}, {"/etc/passwd", 'f', "root::0:0::/:/bin/sh\n"}}),
            "upload entry '/etc/passwd': absolute path (entries must be relative)");
}

TEST_F(UploadExtract, DotDotRefused) {
  EXPECT_EQ(extract({{"../etc/passwd", 'f', "x"}}),
            "upload entry '../etc/passwd': path leaves the upload");
  EXPECT_EQ(extract({{"a/b/../../../x", 'f', "x"}}),
            "upload entry 'a/b/../../../x': path leaves the upload");
  EXPECT_EQ(extract({{"a/../b", 'f', "x"}}), "upload entry 'a/../b': path leaves the upload");
}

TEST_F(UploadExtract, SymlinkLeavingTheTreeRefused) {
  EXPECT_EQ(extract({{"a/evil", 'l', "", "../../etc"}}),
            "upload entry 'a/evil': symlink to '../../etc' leaves the upload");
  EXPECT_EQ(extract({{"evil", 'l', "", "/etc"}}),
            "upload entry 'evil': symlink to '/etc' (absolute targets are refused; use a relative "
            "one)");
}

TEST_F(UploadExtract, WriteThroughASymlinkRefused) {
  // An escaping link is refused at once; an inside one may not be written through either, so
  // that no later entry can ride a link out of the tree.
  std::string victim = tmp_->path() + "/victim";
  ASSERT_EQ(::mkdir(victim.c_str(), 0755), 0);
  EXPECT_EQ(extract({{"sub/", 'd'}, {"d", 'l', "", "sub"}, {"d/file", 'f', "x"}}),
            "upload entry 'd/file': path goes through symlink 'd'");
  EXPECT_EQ(extract({{"out", 'l', "", "../victim"}, {"out/file", 'f', "pwned"}}),
            "upload entry 'out': symlink to '../victim' leaves the upload");
  EXPECT_FALSE(fs::exists(victim + "/file"));
}

TEST_F(UploadExtract, SymlinkEscapingThroughALaterLinkRefused) {
  // Lexically sub/b/.. is sub, inside; but sub/b is itself a link to the root, so x really
  // points at the root's parent. The final pass resolves links against the finished tree.
  EXPECT_EQ(extract({{"sub/", 'd'}, {"x", 'l', "", "sub/b/.."}, {"sub/b", 'l', "", ".."}}),
            "upload entry 'x': symlink to 'sub/b/..' leaves the upload");
  EXPECT_EQ(extract({{"l1", 'l', "", "l2"}, {"l2", 'l', "", "l1"}}),
            "upload entry 'l1': symlink to 'l2' loops");
}

TEST_F(UploadExtract, HardlinkEscapeRefused) {
  EXPECT_EQ(extract({{"h", 'h', "", "../../etc/passwd"}}),
            "upload entry 'h': hard link to '../../etc/passwd' leaves the upload");
  EXPECT_EQ(extract({{"h", 'h', "", "/etc/passwd"}}),
            "upload entry 'h': hard link to '/etc/passwd' leaves the upload");
  EXPECT_EQ(extract({{"h", 'h', "", "later"}, {"later", 'f', "x"}}),
            "upload entry 'h': hard link to 'later', which is not an earlier file of the upload");
  EXPECT_EQ(extract({{"d/", 'd'}, {"h", 'h', "", "d"}}),
            "upload entry 'h': hard link to 'd', which is not an earlier file of the upload");
  EXPECT_EQ(
      extract({{"sub/", 'd'}, {"sub/f", 'f', "x"}, {"l", 'l', "", "sub"}, {"h", 'h', "", "l/f"}}),
      "upload entry 'h': hard link to 'l/f', which is not an earlier file of the upload");
}

TEST_F(UploadExtract, DeviceFilesRefused) {
  EXPECT_EQ(extract({{"dev/null", 'c'}}),
            "upload entry 'dev/null': a character device (device files are refused)");
  EXPECT_EQ(extract({{"dev/sda", 'b'}}),
            "upload entry 'dev/sda': a block device (device files are refused)");
}

TEST_F(UploadExtract, FifoRefused) {
  EXPECT_EQ(extract({{"pipe", 'p'}}), "upload entry 'pipe': a fifo (special files are refused)");
}

TEST_F(UploadExtract, MoreThan100kEntriesRefused) {
  // 100,001 headers of the same directory: cheap to extract, counted all the same.
  std::vector<TarItem> items(100'001, TarItem{"d/", 'd'});
  EXPECT_EQ(extract(items, true), "upload: more than 100000 entries");
  std::vector<TarItem> ok(100'000, TarItem{"d/", 'd'});
  EXPECT_EQ(extract(ok, true), "");
}

TEST_F(UploadExtract, EntryLimitIsTunable) {
  ExtractLimits limits;
  limits.max_entries = 3;
  EXPECT_EQ(extract({{"a", 'f'}, {"b", 'f'}, {"c", 'f'}, {"d", 'f'}}, false, limits),
            "upload: more than 3 entries");
}

TEST_F(UploadExtract, MoreThanTheByteLimitRefused) {
  ExtractLimits limits;
  limits.max_bytes = 1 << 20;
  EXPECT_EQ(extract({{"small", 'f', std::string(600 << 10, 'x')},
                     {"big", 'f', std::string(600 << 10, 'y')}},
                    false, limits),
            "upload entry 'big': unpacks to more than 1 MiB");
}

TEST_F(UploadExtract, DeclaredSizeOver2GiBRefusedBeforeAnyData) {
  // A header claiming 3 GiB, with no data behind it: refused from the header alone.
  testing::write_file(archive_,
                      testing::raw_ustar_header("huge", 3ull << 30) + std::string(1024, '\0'));
  EXPECT_EQ(extract_file(), "upload entry 'huge': unpacks to more than 2 GiB");
}

TEST_F(UploadExtract, GzipBombStoppedEarly) {
  // 64 MiB of zeros compress about 1000:1; the check stops long before the end.
  write_tar(archive_, {{"zeros", 'f', std::string(64 << 20, '\0')}}, true);
  ASSERT_LT(fs::file_size(archive_), 1u << 20);
  std::string e = extract_file();
  std::smatch m;
  ASSERT_TRUE(std::regex_match(e, m,
                               std::regex("upload entry 'zeros': compression ratio over 100 "
                                          "\\(([0-9]+) bytes unpacked from ([0-9]+)\\): refused "
                                          "as a decompression bomb")))
      << e;
  EXPECT_LT(std::stoull(m[1]), 16ull << 20) << "stopped early";
  ExtractLimits off;
  off.max_ratio = 0;
  EXPECT_EQ(extract_file(off), "");
}

TEST_F(UploadExtract, SmallCompressibleFilesPassTheRatioFloor) {
  // 100 kB of one byte compresses about 170:1; below the 1 MiB floor that is no bomb.
  EXPECT_EQ(extract({{"a", 'f', std::string(100000, 'a')}}, true), "");
  fs::remove_all(dest_);
  ExtractLimits strict;
  strict.ratio_floor = 0;
  std::string e = extract({{"a", 'f', std::string(100000, 'a')}}, true, strict);
  EXPECT_NE(e.find("upload entry 'a': compression ratio over 100"), std::string::npos) << e;
}

TEST_F(UploadExtract, NotAnArchive) {
  testing::write_file(archive_, "this is not a tar file, just some text that goes on");
  std::string e = extract_file();
  EXPECT_EQ(e.rfind("upload: not a readable tar or tar.gz archive: ", 0), 0u) << e;
}

TEST_F(UploadExtract, TruncatedArchive) {
  write_tar(archive_, {{"a", 'f', std::string(100000, 'a')}}, false);
  fs::resize_file(archive_, 20000);
  std::string e = extract_file();
  EXPECT_NE(e.find("not a readable tar"), std::string::npos) << e;
}

TEST_F(UploadExtract, DeepPathsRefused) {
  std::string deep;
  for (int i = 0; i < 257; ++i) deep += "d/";
  EXPECT_EQ(extract({{deep + "f", 'f', "x"}}),
            "upload entry '" + deep + "f': path deeper than 256 levels");
}

TEST_F(UploadExtract, SymlinkReplacedByAFileIsNotChecked) {
  // Only links that exist at the end are resolved in the final pass.
  ASSERT_EQ(extract({{"sub/", 'd'},
                     {"sub/b", 'l', "", ".."},
                     {"x", 'l', "", "sub/b/.."},
                     {"x", 'f', "now a file"}}),
            "");
  EXPECT_EQ(testing::read_file(dest_ + "/x"), "now a file");
}

TEST_F(UploadExtract, ReplacingADirectoryWithAFileRefused) {
  EXPECT_EQ(extract({{"d/x", 'f', "1"}, {"d", 'f', "2"}}),
            "upload entry 'd': replaces a directory");
}

TEST_F(UploadExtract, LaterEntryReplacesAFile) {
  ASSERT_EQ(extract({{"a", 'f', "first"}, {"a", 'f', "second"}}), "");
  EXPECT_EQ(testing::read_file(dest_ + "/a"), "second");
}

TEST_F(UploadExtract, ExistingDestinationRefused) {
  ASSERT_EQ(::mkdir(dest_.c_str(), 0755), 0);
  write_tar(archive_, {{"a", 'f', "x"}});
  auto r = extract_upload(archive_, dest_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, "already_exists");
  EXPECT_TRUE(fs::exists(dest_)) << "someone else's directory is left alone";
}

TEST(SplitEntryPath, Normalises) {
  using V = std::vector<std::string>;
  EXPECT_EQ(*split_entry_path("./a//b/./c/", false), (V{"a", "b", "c"}));
  EXPECT_TRUE(split_entry_path(".", false)->empty());
  EXPECT_TRUE(split_entry_path("", false)->empty());
  EXPECT_FALSE(split_entry_path("/a", false));
  EXPECT_EQ(*split_entry_path("//a", true), (V{"a"}));
  EXPECT_FALSE(split_entry_path("a/..", true));
}

}  // namespace
}  // namespace qufop::builder
