// The builder's HTTP API over real sockets, as root (skipped with a reason otherwise): a build
// posted as a tar.gz streams its log and the result, then the image is fetched back through the
// distribution read API (/v2) with every digest checked, and skopeo reads it over HTTP too.
#include <gtest/gtest.h>

#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "builder/build.h"
#include "builder/fsutil.h"
#include "builder/layer.h"
#include "builder/oci.h"
#include "builder/server.h"
#include "common/http_client.h"
#include "common/http_server.h"
#include "common/json.h"
#include "test_builder_build_util.h"
#include "test_builder_util.h"

namespace qufop::builder {
namespace {

namespace asio = boost::asio;

class BuilderHttp : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (namespaces, mounts, cgroups)";
    std::string why;
    const std::string& tar = buildtest::busybox_tar(&why);
    if (tar.empty()) GTEST_SKIP() << why;
    auto tmp = TempDir::make("qufop-bhttp-");
    ASSERT_TRUE(tmp.ok());
    tmp_ = std::make_unique<TempDir>(std::move(*tmp));
    auto store = OciStore::open(tmp_->path() + "/images");
    ASSERT_TRUE(store.ok());
    store_ = std::make_unique<OciStore>(std::move(*store));
    ASSERT_TRUE(import_rootfs_tarball(*store_, "busybox", tar).ok());
    BuildOptions o;
    o.state_dir = tmp_->path() + "/state";
    o.init_path = buildtest::binary("noded/qufop-init");
    o.memory_bytes = 256u << 20;
    o.cpus = 1;
    auto b = Builder::open(*store_, o);
    ASSERT_TRUE(b.ok()) << b.error().message;
    builder_ = std::move(*b);
    server_ = std::make_unique<http::Server>(ioc_, http::ServerOptions{});
    ServiceOptions so;
    so.upload_dir = o.state_dir + "/uploads";
    service_ = std::make_unique<Service>(*server_, *builder_, so);
    auto addr = server_->listen({"127.0.0.1", 0});
    ASSERT_TRUE(addr.ok()) << addr.error().message;
    port_ = addr->port;
    thread_ = std::thread([this] { ioc_.run(); });
  }
  void TearDown() override {
    if (service_) service_->shutdown();
    if (server_) server_->stop();
    work_.reset();
    ioc_.stop();
    if (thread_.joinable()) thread_.join();
    service_.reset();
    server_.reset();
    builder_.reset();
    if (tmp_) {
      auto left = buildtest::leftovers(tmp_->path());
      EXPECT_TRUE(left.empty()) << ::testing::PrintToString(left);
    }
  }

  std::string upload_targz(const std::string& yaml) {
    std::string path = tmp_->path() + "/upload.tar.gz";
    testing::write_tar(path,
                       {{.name = "ufop.yaml", .data = yaml},
                        {.name = "bin", .type = 'd', .mode = 0755},
                        {.name = "bin/serve", .data = "#!/bin/sh\necho up\n", .mode = 0755}},
                       true);
    return testing::read_file(path);
  }

  // POSTs a build; returns the streamed body.
  std::string post_build(const std::string& query, std::string body, int* status) {
    http::Client c("127.0.0.1", port_);
    http::Request req;
    req.method = "POST";
    req.target = "/v1/builds?" + query;
    req.headers = {{"Content-Type", "application/gzip"}};
    req.body = std::move(body);
    std::string out;
    auto r = c.stream(
        req,
        [&](std::string_view d) {
          out.append(d);
          return true;
        },
        std::chrono::seconds(60));
    EXPECT_TRUE(r.ok()) << r.error().message;
    *status = r ? *r : 0;
    return out;
  }

  static json::Object last_json_line(const std::string& text) {
    std::string t = text;
    while (!t.empty() && t.back() == '\n') t.pop_back();
    auto nl = t.rfind('\n');
    auto v = json::parse(nl == std::string::npos ? t : t.substr(nl + 1));
    EXPECT_TRUE(v.ok()) << text;
    return v.ok() && v->is_object() ? v->as_object() : json::Object{};
  }

  asio::io_context ioc_;
  std::unique_ptr<asio::executor_work_guard<asio::io_context::executor_type>> work_ =
      std::make_unique<asio::executor_work_guard<asio::io_context::executor_type>>(
          ioc_.get_executor());
  std::thread thread_;
  std::unique_ptr<TempDir> tmp_;
  std::unique_ptr<OciStore> store_;
  std::unique_ptr<Builder> builder_;
  std::unique_ptr<http::Server> server_;
  std::unique_ptr<Service> service_;
  uint16_t port_ = 0;
};

constexpr const char* kYaml =
    "image: busybox\n"
    "build_script: [mkdir -p /app, cp /src/bin/serve /app/serve]\n"
    "run: /app/serve\n"
    "port: 8080\n";

TEST_F(BuilderHttp, BuildStreamsLogThenImageIsServedOverV2) {
  int status = 0;
  std::string out = post_build("ufop=web&version=3", upload_targz(kYaml), &status);
  EXPECT_EQ(status, 200) << out;
  EXPECT_NE(out.find("+ cp /src/bin/serve /app/serve"), std::string::npos) << out;
  auto result = last_json_line(out);
  ASSERT_TRUE(result.contains("digest")) << out;
  std::string digest(result["digest"].as_string());
  EXPECT_EQ(std::string(result["ref"].as_string()), "web:3");

  http::Client c("127.0.0.1", port_);
  auto v2 = c.get("/v2/");
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(v2->status, 200);
  EXPECT_EQ(v2->body, "{}");

  for (std::string ref : {std::string("3"), digest}) {
    auto m = c.get("/v2/web/manifests/" + ref);
    ASSERT_TRUE(m.ok());
    ASSERT_EQ(m->status, 200) << m->body;
    EXPECT_EQ(m->header("Content-Type"), kMediaManifest);
    EXPECT_EQ(m->header("Docker-Content-Digest"), digest);
    EXPECT_EQ(sha256_digest(m->body), digest);
  }
  auto m = c.get("/v2/web/manifests/3");
  auto manifest = parse_manifest(m->body);
  ASSERT_TRUE(manifest.ok());
  std::vector<BlobRef> blobs = manifest->layers;
  blobs.push_back(manifest->config);
  ASSERT_EQ(manifest->layers.size(), 2u);
  for (const auto& b : blobs) {
    auto blob = c.get("/v2/web/blobs/" + b.digest);
    ASSERT_TRUE(blob.ok());
    ASSERT_EQ(blob->status, 200);
    EXPECT_EQ(blob->header("Docker-Content-Digest"), b.digest);
    EXPECT_EQ(sha256_digest(blob->body), b.digest);
    EXPECT_EQ(static_cast<int64_t>(blob->body.size()), b.size);
    http::Request head;
    head.method = "HEAD";
    head.target = "/v2/web/blobs/" + b.digest;
    auto h = c.send(head);
    ASSERT_TRUE(h.ok());
    EXPECT_EQ(h->status, 200);
    EXPECT_EQ(h->header("Content-Length"), std::to_string(b.size));
    EXPECT_TRUE(h->body.empty());
  }
  // Absent things: the distribution API's errors.
  std::string absent = sha256_digest("nothing");
  auto missing = c.get("/v2/web/blobs/" + absent);
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->status, 404);
  EXPECT_NE(missing->body.find("\"BLOB_UNKNOWN\""), std::string::npos) << missing->body;
  auto bad = c.get("/v2/web/blobs/sha256:xyz");
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->status, 400);
  auto nomanifest = c.get("/v2/web/manifests/4");
  ASSERT_TRUE(nomanifest.ok());
  EXPECT_EQ(nomanifest->status, 404);
  EXPECT_NE(nomanifest->body.find("MANIFEST_UNKNOWN"), std::string::npos);
  // A layer's digest is no manifest.
  auto layer_as_manifest = c.get("/v2/web/manifests/" + manifest->layers[0].digest);
  ASSERT_TRUE(layer_as_manifest.ok());
  EXPECT_EQ(layer_as_manifest->status, 404);

  auto tags = c.get("/v2/web/tags/list");
  ASSERT_TRUE(tags.ok());
  EXPECT_EQ(tags->body, R"({"name":"web","tags":["3"]})");

  if (buildtest::have("skopeo")) {
    std::string inspect = buildtest::capture(
        "skopeo inspect --tls-verify=false docker://127.0.0.1:" + std::to_string(port_) +
        "/web:3 2>&1");
    EXPECT_NE(inspect.find(digest), std::string::npos) << inspect;
  }
}

TEST_F(BuilderHttp, FailedBuildEndsWithAnErrorLine) {
  int status = 0;
  std::string out = post_build("ufop=web&version=9",
                               upload_targz("image: busybox\n"
                                            "build_script: ['echo oops; exit 5']\n"
                                            "run: /bin/true\n"),
                               &status);
  EXPECT_EQ(status, 200);
  auto result = last_json_line(out);
  ASSERT_TRUE(result.contains("error")) << out;
  EXPECT_EQ(std::string(result["error"].as_string()), "build_failed");
  EXPECT_NE(std::string(result["message"].as_string()).find("exit code 5"), std::string::npos);
  EXPECT_FALSE(store_->resolve("web:9").ok());
}

TEST_F(BuilderHttp, BadRequestsAreRefusedBeforeBuilding) {
  int status = 0;
  std::string out = post_build("ufop=web", upload_targz(kYaml), &status);
  EXPECT_EQ(status, 400) << out;
  out = post_build("ufop=web&version=1", "not a tar at all", &status);
  EXPECT_EQ(status, 400) << out;
  out = post_build("ufop=web&version=1", upload_targz("image: busybox\nrun: [\n"), &status);
  EXPECT_EQ(status, 400) << out;
  EXPECT_NE(out.find("ufop.yaml"), std::string::npos) << out;
}

}  // namespace
}  // namespace qufop::builder
