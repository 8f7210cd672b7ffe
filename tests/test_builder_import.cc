// Base image import: an OCI archive (as skopeo writes one) is copied into the store blob by
// blob with the same digests; anything else is taken as a rootfs tarball; bad archives fail
// with the reason and leave no temp files.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "builder/import.h"
#include "tests/process.h"
#include "tests/test_builder_build_util.h"

namespace qufop::builder {
namespace {

namespace fs = std::filesystem;

class BuilderImport : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::make_temp_dir("qufop-import"); }
  void TearDown() override { fs::remove_all(dir_); }
  OciStore store(const std::string& name) {
    fs::create_directories(dir_ + "/" + name);
    auto s = OciStore::open(dir_ + "/" + name);
    EXPECT_TRUE(s.ok());
    return std::move(*s);
  }
  std::string dir_;
};

TEST_F(BuilderImport, OciArchiveKeepsItsDigestsAndRootfsTarballsStillWork) {
  std::string why;
  const std::string& tar = buildtest::busybox_tar(&why);
  if (tar.empty()) GTEST_SKIP() << why;
  if (!buildtest::have("skopeo")) GTEST_SKIP() << "skopeo not installed (Debian package skopeo)";
  auto first = store("first");
  EXPECT_FALSE(*is_oci_archive(tar));
  auto base = import_image(first, "busybox:latest", tar, dir_ + "/tmp");
  ASSERT_TRUE(base.ok()) << base.error().message;

  std::string archive = dir_ + "/busybox-oci.tar";
  std::string cmd = "skopeo copy -q oci:" + dir_ + "/first:busybox:latest oci-archive:" + archive +
                    ":latest 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  EXPECT_TRUE(*is_oci_archive(archive));

  auto second = store("second");
  auto copied = import_image(second, "base:1", archive, dir_ + "/tmp");
  ASSERT_TRUE(copied.ok()) << copied.error().message;
  EXPECT_EQ(copied->digest, base->digest);
  auto resolved = second.resolve("base:1");
  ASSERT_TRUE(resolved.ok());
  auto manifest = second.read_manifest(resolved->digest);
  ASSERT_TRUE(manifest.ok());
  for (const auto& layer : manifest->layers) EXPECT_TRUE(second.verify_blob(layer.digest).ok());
  EXPECT_TRUE(fs::is_empty(dir_ + "/tmp")) << "temp files left";
}

TEST_F(BuilderImport, ABrokenOciArchiveFailsWithTheReason) {
  // An oci-layout file but no index: not an image layout.
  fs::create_directories(dir_ + "/bad");
  std::ofstream(dir_ + "/bad/oci-layout") << R"({"imageLayoutVersion":"1.0.0"})";
  std::string archive = dir_ + "/bad.tar";
  ASSERT_EQ(std::system(("tar -C " + dir_ + "/bad -cf " + archive + " oci-layout").c_str()), 0);
  auto s = store("into");
  auto r = import_image(s, "base:1", archive, dir_ + "/tmp");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("OCI archive"), std::string::npos) << r.error().message;
  EXPECT_TRUE(fs::is_empty(dir_ + "/tmp")) << "temp files left";
  auto listed = s.list();
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->empty());
}

}  // namespace
}  // namespace qufop::builder
