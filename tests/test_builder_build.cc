// The builder end to end, as root (skipped with a reason otherwise): `qufop-builder import` of
// the busybox tarball of scripts/make-busybox-tar, then real builds in the noded sandbox — the
// image read by skopeo and umoci, reproducible digests, a failing script, a timeout and a
// missing base refused with the index unchanged, and nothing left mounted or in cgroups.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "builder/build.h"
#include "builder/descriptor.h"
#include "builder/fsutil.h"
#include "builder/layer.h"
#include "builder/oci.h"
#include "test_builder_build_util.h"
#include "test_builder_util.h"

namespace qufop::builder {
namespace {

namespace fs = std::filesystem;
using testing::read_file;
using testing::write_file;

TEST(BuilderImport, ImportedBusyboxReadBySkopeo) {
  std::string why;
  const std::string& tar = buildtest::busybox_tar(&why);
  if (tar.empty()) GTEST_SKIP() << why;
  auto tmp = TempDir::make("qufop-import-");
  ASSERT_TRUE(tmp.ok());
  std::string cmd = buildtest::binary("builder/qufop-builder") + " import base:7 " + tar +
                    " --data-dir " + tmp->path() + " >/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::string images = tmp->path() + "/builder/images";
  auto store = OciStore::open(images);
  ASSERT_TRUE(store.ok());
  auto m = store->resolve("base:7");
  ASSERT_TRUE(m.ok()) << m.error().message;
  if (!buildtest::have("skopeo")) GTEST_SKIP() << "skopeo not installed";
  std::string out = buildtest::capture("skopeo inspect oci:" + images + ":base:7");
  EXPECT_NE(out.find(m->digest), std::string::npos) << out;
  // A bad tarball: a clear error, exit code 1.
  cmd = buildtest::binary("builder/qufop-builder") + " import base:8 /nonexistent.tar --data-dir " +
        tmp->path() + " 2>/dev/null";
  EXPECT_NE(std::system(cmd.c_str()), 0);
  EXPECT_FALSE(store->resolve("base:8").ok());
}

class BuildRoot : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (namespaces, mounts, cgroups)";
    std::string why;
    tar_ = buildtest::busybox_tar(&why);
    if (tar_.empty()) GTEST_SKIP() << why;
    auto tmp = TempDir::make("qufop-build-");
    ASSERT_TRUE(tmp.ok());
    tmp_ = std::make_unique<TempDir>(std::move(*tmp));
    auto store = OciStore::open(tmp_->path() + "/images");
    ASSERT_TRUE(store.ok()) << store.error().message;
    store_ = std::make_unique<OciStore>(std::move(*store));
    auto base = import_rootfs_tarball(*store_, "busybox", tar_);
    ASSERT_TRUE(base.ok()) << base.error().message;
  }
  void TearDown() override {
    if (!tmp_) return;
    builder_.reset();
    auto left = buildtest::leftovers(tmp_->path());
    EXPECT_TRUE(left.empty()) << ::testing::PrintToString(left);
  }

  Builder& builder(std::chrono::milliseconds timeout = std::chrono::minutes(2)) {
    BuildOptions o;
    o.state_dir = tmp_->path() + "/state";
    o.init_path = buildtest::binary("noded/qufop-init");
    o.timeout = timeout;
    o.stop_wait = std::chrono::milliseconds(500);
    o.memory_bytes = 256u << 20;
    o.cpus = 1;
    auto b = Builder::open(*store_, o);
    EXPECT_TRUE(b.ok()) << b.error().message;
    builder_ = std::move(*b);
    return *builder_;
  }

  // An upload dir with run.sh and a ufop.yaml holding `yaml`.
  std::string upload(const std::string& name, const std::string& yaml) {
    std::string dir = tmp_->path() + "/" + name;
    fs::create_directories(dir);
    write_file(dir + "/run.sh", "#!/bin/sh\necho hello from $PORT\n");
    write_file(dir + "/ufop.yaml", yaml);
    return dir;
  }

  static Descriptor descriptor(const std::string& yaml) {
    auto d = parse_descriptor(yaml);
    EXPECT_TRUE(d.ok()) << d.error().message;
    return *d;
  }

  std::string index() const { return read_file(store_->root().string() + "/index.json"); }

  static constexpr const char* kDemo =
      "image: busybox\n"
      "build_script: [cp -r /src /app, chmod +x /app/run.sh]\n"
      "run: /app/run.sh\n"
      "env: {MODE: fast}\n"
      "port: 9200\n"
      "health: /health\n"
      "memory: 64m\n";

  std::string tar_;
  std::unique_ptr<TempDir> tmp_;
  std::unique_ptr<OciStore> store_;
  std::unique_ptr<Builder> builder_;
};

TEST_F(BuildRoot, BuildsSmallUfopThatStandardToolsRead) {
  std::string dir = upload("up", kDemo);
  std::vector<std::string> lines;
  auto r = builder().build(descriptor(kDemo), dir, "demo", "1",
                           [&](std::string_view l) { lines.emplace_back(l); });
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->ref, "demo:1");
  std::string log;
  for (const auto& l : lines) log += l + "\n";
  EXPECT_NE(log.find("+ cp -r /src /app"), std::string::npos) << log;
  EXPECT_NE(log.find("+ chmod +x /app/run.sh"), std::string::npos) << log;
  EXPECT_TRUE(fs::exists(dir + "/run.sh")) << "the upload is put back";

  auto m = store_->resolve("demo:1");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->digest, r->manifest.digest);
  auto man = store_->read_manifest(m->digest);
  ASSERT_TRUE(man.ok());
  EXPECT_EQ(man->layers.size(), 2u);
  auto cfg = store_->read_config(man->config.digest);
  ASSERT_TRUE(cfg.ok());
  EXPECT_EQ(cfg->entrypoint, std::vector<std::string>{"/app/run.sh"});
  EXPECT_EQ(cfg->exposed_ports, std::vector<std::string>{"9200/tcp"});
  EXPECT_EQ(cfg->labels["org.qufop.health"], "/health");
  EXPECT_EQ(cfg->labels["org.qufop.memory"], std::to_string(64u << 20));
  EXPECT_EQ(cfg->diff_ids.size(), 2u);
  // The new layer holds what the script made and nothing of the sandbox or of /src.
  std::string listing =
      buildtest::capture("tar tzf " + store_->blob_path(man->layers[1].digest).string());
  EXPECT_EQ(listing, "app/\napp/run.sh\napp/ufop.yaml\n");
  bool port = false, mode = false;
  for (const auto& e : cfg->env) {
    port |= e == "PORT=9200";
    mode |= e == "MODE=fast";
  }
  EXPECT_TRUE(port && mode) << ::testing::PrintToString(cfg->env);

  std::string images = store_->root().string();
  if (buildtest::have("skopeo")) {
    std::string out = buildtest::capture("skopeo inspect oci:" + images + ":demo:1");
    EXPECT_NE(out.find(m->digest), std::string::npos) << out;
  }
  if (buildtest::have("umoci")) {
    std::string bundle = tmp_->path() + "/bundle";
    std::string out =
        buildtest::capture("umoci unpack --image " + images + ":demo:1 " + bundle + " 2>&1");
    struct stat st {};
    ASSERT_EQ(::stat((bundle + "/rootfs/app/run.sh").c_str(), &st), 0) << out;
    EXPECT_TRUE(st.st_mode & S_IXUSR);
    EXPECT_TRUE(fs::exists(bundle + "/rootfs/bin/busybox"));
    EXPECT_FALSE(fs::exists(bundle + "/rootfs/src")) << "the upload is not in the image";
    fs::remove_all(bundle);
  }
}

TEST_F(BuildRoot, SameInputsGiveTheSameDigest) {
  std::string dir = upload("up", kDemo);
  auto& b = builder();
  auto first = b.build(descriptor(kDemo), dir, "demo", "1", nullptr);
  ASSERT_TRUE(first.ok()) << first.error().message;
  // Other timestamps on the upload's files, a second build under another tag.
  ::utimes((dir + "/run.sh").c_str(), nullptr);
  auto second = b.build(descriptor(kDemo), dir, "demo", "2", nullptr);
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_EQ(first->manifest.digest, second->manifest.digest);
  // The base layer was unpacked once, into the cache.
  size_t cached = 0;
  for (const auto& e : fs::directory_iterator(tmp_->path() + "/state/layers")) {
    (void)e;
    ++cached;
  }
  EXPECT_EQ(cached, 1u);
}

TEST_F(BuildRoot, FailingScriptReportsExitCodeAndLastLines) {
  const char* yaml =
      "image: busybox\n"
      "build_script: [echo preparing, 'echo broken >&2; exit 3', echo never]\n"
      "run: /bin/true\n";
  std::string dir = upload("up", yaml);
  std::string before = index();
  std::vector<std::string> lines;
  auto r = builder().build(descriptor(yaml), dir, "bad", "1",
                           [&](std::string_view l) { lines.emplace_back(l); });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "build_failed");
  EXPECT_NE(r.error().message.find("exit code 3"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("broken"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("line 2 failed"), std::string::npos) << r.error().message;
  for (const auto& l : lines) EXPECT_EQ(l.find("never"), std::string::npos) << l;
  EXPECT_EQ(index(), before);
  EXPECT_FALSE(store_->resolve("bad:1").ok());
}

TEST_F(BuildRoot, TimeoutStopsTheBuild) {
  const char* yaml =
      "image: busybox\n"
      "build_script: [touch /made, sleep 60]\n"
      "run: /bin/true\n";
  std::string dir = upload("up", yaml);
  std::string before = index();
  auto start = std::chrono::steady_clock::now();
  auto r =
      builder(std::chrono::milliseconds(1500)).build(descriptor(yaml), dir, "slow", "1", nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
  EXPECT_EQ(r.error().code, "deadline_exceeded");
  EXPECT_NE(r.error().message.find("timed out"), std::string::npos) << r.error().message;
  EXPECT_EQ(index(), before);
}

TEST_F(BuildRoot, MissingBaseIsRefused) {
  const char* yaml =
      "image: alpine:3\n"
      "build_script: [true]\n"
      "run: /bin/true\n";
  std::string dir = upload("up", yaml);
  std::string before = index();
  auto r = builder().build(descriptor(yaml), dir, "nobase", "1", nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("alpine:3"), std::string::npos) << r.error().message;
  EXPECT_EQ(index(), before);
}

TEST_F(BuildRoot, DeletionsBecomeWhiteouts) {
  const char* yaml =
      "image: busybox\n"
      "build_script: [rm /etc/group, mkdir /data]\n"
      "run: /bin/true\n";
  std::string dir = upload("up", yaml);
  auto r = builder().build(descriptor(yaml), dir, "wh", "1", nullptr);
  ASSERT_TRUE(r.ok()) << r.error().message;
  if (!buildtest::have("umoci")) GTEST_SKIP() << "umoci not installed";
  std::string bundle = tmp_->path() + "/bundle";
  std::string out = buildtest::capture("umoci unpack --image " + store_->root().string() +
                                       ":wh:1 " + bundle + " 2>&1");
  EXPECT_TRUE(fs::is_directory(bundle + "/rootfs/data")) << out;
  EXPECT_FALSE(fs::exists(bundle + "/rootfs/etc/group"));
  EXPECT_TRUE(fs::exists(bundle + "/rootfs/etc/passwd"));
  fs::remove_all(bundle);
}

}  // namespace
}  // namespace qufop::builder
