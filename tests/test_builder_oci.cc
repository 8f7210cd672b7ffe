// The OCI image layout store: blobs, manifests, the index, resolve, garbage collection.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <thread>

#include "builder/fsutil.h"
#include "builder/oci.h"
#include "common/json.h"
#include "tests/test_builder_util.h"

namespace qufop::builder {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kHelloDigest =
    "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

class OciLayout : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = TempDir::make("qufop-oci-");
    ASSERT_TRUE(t) << t.error().message;
    tmp_ = std::make_unique<TempDir>(std::move(*t));
    auto s = OciStore::open(tmp_->path() + "/store");
    ASSERT_TRUE(s) << s.error().message;
    store_ = std::make_unique<OciStore>(std::move(*s));
  }

  // A tiny image: one layer blob of `content`, a config, a manifest.
  BlobRef image(const std::string& content) {
    auto layer = store_->put_blob_bytes(content);
    EXPECT_TRUE(layer);
    ImageConfig c;
    c.diff_ids = {layer->digest};
    c.entrypoint = {"/app"};
    auto config = store_->put_config(c);
    EXPECT_TRUE(config);
    Manifest m;
    m.config = *config;
    BlobRef l = *layer;
    l.media_type = std::string(kMediaLayerTar);
    m.layers = {l};
    auto manifest = store_->put_manifest(m);
    EXPECT_TRUE(manifest) << manifest.error().message;
    return *manifest;
  }
  size_t tmp_files() {
    size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(store_->root() / ".tmp")) ++n;
    return n;
  }

  std::unique_ptr<TempDir> tmp_;
  std::unique_ptr<OciStore> store_;
};

TEST_F(OciLayout, LayoutFiles) {
  EXPECT_EQ(testing::read_file(store_->root() / "oci-layout"), R"({"imageLayoutVersion":"1.0.0"})");
  EXPECT_EQ(
      testing::read_file(store_->root() / "index.json"),
      R"({"manifests":[],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2})");
  EXPECT_TRUE(fs::is_directory(store_->root() / "blobs" / "sha256"));
  // Opening again keeps what is there.
  auto again = OciStore::open(store_->root());
  ASSERT_TRUE(again);
  testing::write_file(store_->root() / "oci-layout", R"({"imageLayoutVersion":"2.0.0"})");
  auto bad = OciStore::open(store_->root());
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("not an OCI image layout of version 1.x"), std::string::npos);
}

TEST_F(OciLayout, PutAndVerifyBlob) {
  auto b = store_->put_blob_bytes("hello");
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ(b->digest, kHelloDigest);
  EXPECT_EQ(b->size, 5);
  EXPECT_TRUE(store_->has_blob(kHelloDigest));
  EXPECT_TRUE(store_->verify_blob(kHelloDigest));
  EXPECT_EQ(*store_->read_blob(kHelloDigest), "hello");
  EXPECT_EQ(testing::read_file(store_->blob_path(kHelloDigest)), "hello");
  EXPECT_EQ(tmp_files(), 0u);
  struct stat st;
  ASSERT_EQ(::stat(store_->blob_path(kHelloDigest).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
}

TEST_F(OciLayout, StreamedBlobWithExpectedDigest) {
  std::string data(1 << 20, 'z');
  size_t pos = 0;
  auto reader = [&](char* buf, size_t len) -> Result<size_t> {
    size_t n = std::min(len, data.size() - pos);
    std::copy_n(data.data() + pos, n, buf);
    pos += n;
    return n;
  };
  auto b = store_->put_blob(reader, sha256_digest(data));
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ(b->size, 1 << 20);
  EXPECT_TRUE(store_->verify_blob(b->digest));
}

TEST_F(OciLayout, DigestMismatchLeavesNothingVisible) {
  std::string data = "not what was promised";
  bool done = false;
  auto reader = [&](char* buf, size_t) -> Result<size_t> {
    if (done) return size_t{0};
    done = true;
    std::copy(data.begin(), data.end(), buf);
    return data.size();
  };
  auto b = store_->put_blob(reader, kHelloDigest);
  ASSERT_FALSE(b);
  EXPECT_NE(b.error().message.find("blob digest mismatch: expected " + std::string(kHelloDigest)),
            std::string::npos);
  EXPECT_FALSE(store_->has_blob(kHelloDigest));
  EXPECT_FALSE(store_->has_blob(sha256_digest(data)));
  EXPECT_EQ(tmp_files(), 0u);
}

TEST_F(OciLayout, FailedReaderLeavesNothing) {
  auto reader = [&](char*, size_t) -> Result<size_t> { return Error::io("connection reset"); };
  auto b = store_->put_blob(reader);
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().message, "connection reset");
  EXPECT_EQ(tmp_files(), 0u);
}

TEST_F(OciLayout, CorruptedBlobDetected) {
  auto b = store_->put_blob_bytes("hello");
  ASSERT_TRUE(b);
  testing::write_file(store_->blob_path(b->digest), "jello");
  auto v = store_->verify_blob(b->digest);
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().message, "blob " + std::string(kHelloDigest) +
                                   " is corrupt: its content has digest " + sha256_digest("jello"));
  EXPECT_FALSE(store_->read_blob(b->digest));
  auto missing = store_->verify_blob(sha256_digest("other"));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, "not_found");
  EXPECT_FALSE(store_->open_blob("sha256:xyz"));
}

TEST_F(OciLayout, ManifestAndConfigRoundTrip) {
  BlobRef m = image("layer-1");
  EXPECT_EQ(m.media_type, kMediaManifest);
  auto manifest = store_->read_manifest(m.digest);
  ASSERT_TRUE(manifest) << manifest.error().message;
  EXPECT_EQ(manifest->layers.size(), 1u);
  EXPECT_EQ(manifest->config.media_type, kMediaConfig);
  auto config = store_->read_config(manifest->config.digest);
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->entrypoint, std::vector<std::string>{"/app"});
  EXPECT_EQ(config->os, "linux");
  EXPECT_EQ(config->architecture, host_architecture());
  EXPECT_EQ(config->diff_ids, std::vector<std::string>{sha256_digest("layer-1")});
  // Same inputs, same bytes, same digest.
  EXPECT_EQ(image("layer-1").digest, m.digest);
  EXPECT_NE(image("layer-2").digest, m.digest);
}

TEST_F(OciLayout, CanonicalJsonSortsKeys) {
  auto v = json::parse(R"({"b":1,"a":{"d":[{"z":1,"y":2}],"c":"x"}})");
  ASSERT_TRUE(v);
  EXPECT_EQ(canonical_json(*v), R"({"a":{"c":"x","d":[{"y":2,"z":1}]},"b":1})");
  ImageConfig c;
  c.architecture = "amd64";
  c.env = {"PATH=/bin"};
  c.exposed_ports = {"9100/tcp"};
  c.labels = {{"b", "2"}, {"a", "1"}};
  c.diff_ids = {std::string(kHelloDigest)};
  EXPECT_EQ(
      config_json(c),
      R"({"architecture":"amd64","config":{"Env":["PATH=/bin"],"ExposedPorts":{"9100/tcp":{}},)"
      R"("Labels":{"a":"1","b":"2"}},"os":"linux","rootfs":{"diff_ids":[")" +
          std::string(kHelloDigest) + R"("],"type":"layers"}})");
}

TEST_F(OciLayout, ParseManifestErrors) {
  EXPECT_FALSE(parse_manifest("{"));
  auto r = parse_manifest(R"({"schemaVersion":1})");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("schemaVersion is not 2"), std::string::npos);
  r = parse_manifest(
      R"({"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:1","size":1},"layers":[]})");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "manifest config: digest 'sha256:1' is not sha256:<64 hex>");
  r = parse_manifest(
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]})");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("is an image index"), std::string::npos);
}

TEST_F(OciLayout, PutManifestNeedsItsBlobs) {
  Manifest m;
  m.config = BlobRef{std::string(kMediaConfig), sha256_digest("nope"), 4, {}};
  auto r = store_->put_manifest(m);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, "not_found");
}

TEST_F(OciLayout, TagResolveList) {
  BlobRef a = image("a");
  BlobRef b = image("b");
  ASSERT_TRUE(store_->tag("busybox", "latest", a));
  ASSERT_TRUE(store_->tag("team/ufop-demo", "1", b));
  auto r = store_->resolve("busybox");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->digest, a.digest);
  EXPECT_EQ(r->media_type, kMediaManifest);
  EXPECT_EQ(r->size, a.size);
  EXPECT_EQ(store_->resolve("busybox:latest")->digest, a.digest);
  EXPECT_EQ(store_->resolve("team/ufop-demo:1")->digest, b.digest);
  EXPECT_EQ(store_->resolve("anything@" + b.digest)->digest, b.digest);
  auto missing = store_->resolve("team/ufop-demo:2");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, "not_found");
  EXPECT_EQ(missing.error().message,
            "no image team/ufop-demo:2 in the store (import or build it first)");
  EXPECT_FALSE(store_->resolve("x@" + sha256_digest("absent")));

  // Re-tagging moves the tag; the index holds one entry per name:tag.
  ASSERT_TRUE(store_->tag("busybox", "latest", b));
  EXPECT_EQ(store_->resolve("busybox")->digest, b.digest);
  auto list = store_->list();
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "busybox");
  EXPECT_EQ((*list)[0].tag, "latest");
  EXPECT_EQ((*list)[1].name, "team/ufop-demo");
  EXPECT_EQ((*list)[1].tag, "1");

  auto index = json::parse(testing::read_file(store_->root() / "index.json"));
  ASSERT_TRUE(index);
  const auto& m0 = index->as_object().at("manifests").as_array()[0].as_object();
  EXPECT_EQ(m0.at("annotations").as_object().at(kAnnotationRefName).as_string(), "busybox:latest");

  EXPECT_FALSE(store_->tag("BusyBox", "latest", a));
  EXPECT_FALSE(store_->tag("busybox", "-x", a));
  EXPECT_EQ(store_->tag("busybox", "v", BlobRef{"", sha256_digest("absent"), 1, {}}).error().code,
            "not_found");
  ASSERT_TRUE(store_->untag("busybox", "latest"));
  EXPECT_FALSE(store_->resolve("busybox"));
  EXPECT_EQ(store_->untag("busybox", "latest").error().code, "not_found");
}

TEST_F(OciLayout, IndexIsReplacedAtomically) {
  BlobRef a = image("a");
  struct stat before, after;
  ASSERT_EQ(::stat((store_->root() / "index.json").c_str(), &before), 0);
  ASSERT_TRUE(store_->tag("busybox", "latest", a));
  ASSERT_EQ(::stat((store_->root() / "index.json").c_str(), &after), 0);
  EXPECT_NE(before.st_ino, after.st_ino) << "a new file renamed over the old one";
  EXPECT_EQ(tmp_files(), 0u);
  // Concurrent taggers (threads here, processes alike: flock) lose no update.
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      for (int j = 0; j < 5; ++j) {
        EXPECT_TRUE(store_->tag("t", "v" + std::to_string(i * 5 + j), a));
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(store_->list()->size(), 41u);
}

TEST_F(OciLayout, GarbageCollection) {
  BlobRef keep = image("kept layer");
  BlobRef drop = image("dropped layer");
  ASSERT_TRUE(store_->tag("keep", "1", keep));
  ASSERT_TRUE(store_->tag("drop", "1", drop));
  auto stray = store_->put_blob_bytes("stray");
  ASSERT_TRUE(stray);
  // Young unreferenced blobs survive the default grace period (a build may be mid-way).
  auto gc = store_->gc();
  ASSERT_TRUE(gc) << gc.error().message;
  EXPECT_EQ(gc->blobs_removed, 0u);
  EXPECT_TRUE(store_->has_blob(stray->digest));

  ASSERT_TRUE(store_->untag("drop", "1"));
  gc = store_->gc(GcOptions{std::chrono::seconds(0)});
  ASSERT_TRUE(gc) << gc.error().message;
  // drop's manifest, config and layer, and the stray blob.
  EXPECT_EQ(gc->blobs_removed, 4u);
  EXPECT_EQ(gc->blobs_kept, 3u);
  EXPECT_FALSE(store_->has_blob(drop.digest));
  EXPECT_FALSE(store_->has_blob(sha256_digest("dropped layer")));
  EXPECT_FALSE(store_->has_blob(stray->digest));
  EXPECT_TRUE(store_->has_blob(keep.digest));
  EXPECT_TRUE(store_->has_blob(sha256_digest("kept layer")));
  auto m = store_->read_manifest(keep.digest);
  ASSERT_TRUE(m);
  EXPECT_TRUE(store_->has_blob(m->config.digest));
}

TEST_F(OciLayout, GarbageCollectionStopsOnAnUnreadableManifest) {
  BlobRef keep = image("kept layer");
  ASSERT_TRUE(store_->tag("keep", "1", keep));
  testing::write_file(store_->blob_path(keep.digest), "garbage");
  auto gc = store_->gc(GcOptions{std::chrono::seconds(0)});
  ASSERT_FALSE(gc);
  EXPECT_NE(gc.error().message.find("nothing removed"), std::string::npos);
  EXPECT_TRUE(store_->has_blob(sha256_digest("kept layer")));
}

}  // namespace
}  // namespace qufop::builder
