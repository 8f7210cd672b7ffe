// The pusher against a real registry: Debian's docker-registry on a free loopback port with a
// temp storage dir. The busybox base (plus a small top layer) is pushed with `qufop-builder push`,
// pulled back by the puller into a fresh store (same manifest digest), pushed again (every blob
// already there), and read by skopeo when it is installed. Upload Location handling is unit
// tested here too. Skips with a reason when docker-registry or the busybox base is missing.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "builder/builder.h"
#include "builder/fsutil.h"
#include "builder/layer.h"
#include "builder/oci.h"
#include "builder/puller.h"
#include "builder/pusher.h"
#include "common/http_client.h"
#include "process.h"
#include "test_builder_build_util.h"
#include "test_builder_util.h"

namespace qufop::builder {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

const std::string kDigest = "sha256:" + std::string(64, 'a');

TEST(UploadTarget, AddsDigestWithTheRightSeparator) {
  auto t = upload_target("/v2/x/blobs/uploads/abc", kDigest);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, "/v2/x/blobs/uploads/abc?digest=sha256%3A" + std::string(64, 'a'));
  t = upload_target("http://127.0.0.1:5000/v2/x/blobs/uploads/abc?_state=s%3D", kDigest);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, "/v2/x/blobs/uploads/abc?_state=s%3D&digest=sha256%3A" + std::string(64, 'a'));
  t = upload_target("https://r.example/v2/x/blobs/uploads/abc?", kDigest);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, "/v2/x/blobs/uploads/abc?digest=sha256%3A" + std::string(64, 'a'));
  EXPECT_FALSE(upload_target("", kDigest).ok());
  EXPECT_FALSE(upload_target("v2/relative", kDigest).ok());
}

class Push : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string bin = buildtest::capture("command -v docker-registry");
    while (!bin.empty() && bin.back() == '\n') bin.pop_back();
    if (bin.empty()) {
      GTEST_SKIP() << "docker-registry not installed (Debian package docker-registry)";
    }
    std::string why;
    const std::string& tar = buildtest::busybox_tar(&why);
    if (tar.empty()) GTEST_SKIP() << why;
    auto tmp = TempDir::make("qufop-push-");
    ASSERT_TRUE(tmp.ok());
    tmp_ = std::make_unique<TempDir>(std::move(*tmp));
    port_ = test::free_port();
    std::string config = tmp_->path() + "/config.yml";
    testing::write_file(config,
                        "version: 0.1\n"
                        "log:\n  level: error\n"
                        "storage:\n  filesystem:\n    rootdirectory: " +
                            tmp_->path() +
                            "/registry\n"
                            "http:\n  secret: qufop-test\n  addr: 127.0.0.1:" +
                            std::to_string(port_) + "\n");
    registry_ = std::make_unique<test::Process>(std::vector<std::string>{bin, "serve", config});
    bool up = false;
    for (int i = 0; i < 200 && !up; ++i) {
      http::Client c("127.0.0.1", port_, {.connect_timeout = 500ms, .request_timeout = 2s});
      auto r = c.get("/v2/");
      up = r.ok() && r->status == 200;
      if (!up) {
        ASSERT_FALSE(registry_->wait(0ms).has_value())
            << "docker-registry exited: " << registry_->err();
        std::this_thread::sleep_for(50ms);
      }
    }
    ASSERT_TRUE(up) << "docker-registry did not answer GET /v2/: " << registry_->err();

    data_dir_ = tmp_->path() + "/data";
    ASSERT_TRUE(make_dirs(images_dir(data_dir_), 0755).ok());
    auto src = OciStore::open(images_dir(data_dir_));
    ASSERT_TRUE(src.ok());
    src_ = std::make_unique<OciStore>(std::move(*src));
    auto base = import_rootfs_tarball(*src_, "busybox:1", tar);
    ASSERT_TRUE(base.ok()) << base.error().message;
    base_digest_ = base->digest;
  }
  void TearDown() override {
    registry_.reset();  // SIGKILLs and reaps it
    tmp_.reset();
  }

  HostPort registry() const { return {"127.0.0.1", port_}; }

  std::unique_ptr<TempDir> tmp_;
  uint16_t port_ = 0;
  std::unique_ptr<test::Process> registry_;
  std::string data_dir_;
  std::unique_ptr<OciStore> src_;
  std::string base_digest_;
};

TEST_F(Push, CliPushThenPullRoundTrips) {
  test::Process push({buildtest::binary("builder/qufop-builder"), "push", "busybox:1",
                      "127.0.0.1:" + std::to_string(port_), "--data-dir", data_dir_, "--as",
                      "qf/busybox:rt"});
  auto st = push.wait(60s);
  ASSERT_TRUE(st.has_value());
  ASSERT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << push.err();
  EXPECT_NE(push.out().find(base_digest_), std::string::npos) << push.out();

  auto dst = OciStore::open(tmp_->path() + "/dst");
  ASSERT_TRUE(dst.ok());
  Puller puller(*dst, tmp_->path() + "/cache");
  auto img = puller.pull(registry(), "qf/busybox", "rt");
  ASSERT_TRUE(img.ok()) << img.error().message;
  EXPECT_EQ(img->manifest.digest, base_digest_);
  EXPECT_EQ(img->blobs_fetched, 2u);
  ASSERT_EQ(img->layer_dirs.size(), 1u);
  EXPECT_TRUE(fs::exists(img->layer_dirs[0] + "/bin/busybox"));

  // Again, under another tag: every blob is there already; only the manifest is put.
  auto again = push_image(*src_, "busybox:1", registry(), "qf/busybox", "again");
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(again->blobs_uploaded, 0u);
  EXPECT_EQ(again->blobs_present, 2u);
  EXPECT_EQ(again->manifest.digest, base_digest_);

  if (buildtest::have("skopeo")) {
    std::string out = buildtest::capture("skopeo inspect --tls-verify=false docker://127.0.0.1:" +
                                         std::to_string(port_) + "/qf/busybox:rt 2>&1");
    EXPECT_NE(out.find(base_digest_), std::string::npos) << out;
  }
}

TEST_F(Push, TwoLayerImageUploadsOnlyTheNewLayer) {
  ASSERT_TRUE(push_image(*src_, "busybox:1", registry(), "two", "base").ok());
  std::string app = tmp_->path() + "/top";
  fs::create_directories(app + "/app");
  testing::write_file(app + "/app/hello", "hello\n");
  auto top = make_layer(*src_, app);
  ASSERT_TRUE(top.ok()) << top.error().message;
  auto bm = src_->read_manifest(base_digest_);
  ASSERT_TRUE(bm.ok());
  auto cfg = src_->read_config(bm->config.digest);
  ASSERT_TRUE(cfg.ok());
  cfg->diff_ids.push_back(top->diff_id);
  auto cref = src_->put_config(*cfg);
  ASSERT_TRUE(cref.ok());
  Manifest m = *bm;
  m.config = *cref;
  m.layers.push_back(top->blob);
  auto mref = src_->put_manifest(m);
  ASSERT_TRUE(mref.ok());
  ASSERT_TRUE(src_->tag("two", "1", *mref).ok());

  auto pushed = push_image(*src_, "two:1", registry(), "two", "1");
  ASSERT_TRUE(pushed.ok()) << pushed.error().message;
  EXPECT_EQ(pushed->blobs_uploaded, 2u);  // the new config and the new layer
  EXPECT_EQ(pushed->blobs_present, 1u);   // the busybox layer
  auto dst = OciStore::open(tmp_->path() + "/dst");
  ASSERT_TRUE(dst.ok());
  Puller puller(*dst, tmp_->path() + "/cache");
  auto img = puller.pull(registry(), "two", "1");
  ASSERT_TRUE(img.ok()) << img.error().message;
  EXPECT_EQ(img->manifest.digest, mref->digest);
  ASSERT_EQ(img->layer_dirs.size(), 2u);
  EXPECT_EQ(testing::read_file(img->layer_dirs[0] + "/app/hello"), "hello\n");
}

TEST_F(Push, MissingImageAndDeadRegistryFailClearly) {
  auto missing = push_image(*src_, "nope:1", registry(), "nope", "1");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("nope"), std::string::npos) << missing.error().message;
  auto dead = push_image(*src_, "busybox:1", {"127.0.0.1", test::free_port()}, "x", "1");
  ASSERT_FALSE(dead.ok());
}

}  // namespace
}  // namespace qufop::builder
