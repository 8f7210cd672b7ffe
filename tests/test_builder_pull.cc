// The puller against the builder's /v2 over real sockets: an image (busybox plus one layer)
// pulled into a second store with every digest verified and its layers unpacked once into the
// cache; a corrupted blob rejected with nothing tagged; the layer cache's gc. The images are
// made without the sandbox (import + make_layer), so no build runs here.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "builder/build.h"
#include "builder/fsutil.h"
#include "builder/layer.h"
#include "builder/oci.h"
#include "builder/puller.h"
#include "builder/server.h"
#include "common/http_server.h"
#include "test_builder_build_util.h"
#include "test_builder_util.h"

namespace qufop::builder {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;

class Pull : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    const std::string& tar = buildtest::busybox_tar(&why);
    if (tar.empty()) GTEST_SKIP() << why;
    auto tmp = TempDir::make("qufop-pull-");
    ASSERT_TRUE(tmp.ok());
    tmp_ = std::make_unique<TempDir>(std::move(*tmp));
    auto src = OciStore::open(tmp_->path() + "/src");
    ASSERT_TRUE(src.ok());
    src_ = std::make_unique<OciStore>(std::move(*src));
    auto base = import_rootfs_tarball(*src_, "busybox", tar);
    ASSERT_TRUE(base.ok()) << base.error().message;
    base_digest_ = base->digest;
    // "two:1": busybox plus a layer holding app/hello.
    std::string app = tmp_->path() + "/top";
    fs::create_directories(app + "/app");
    testing::write_file(app + "/app/hello", "hello\n");
    auto top = make_layer(*src_, app);
    ASSERT_TRUE(top.ok()) << top.error().message;
    auto bm = src_->read_manifest(base->digest);
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
    two_ = m;
    two_digest_ = mref->digest;

    auto dst = OciStore::open(tmp_->path() + "/dst");
    ASSERT_TRUE(dst.ok());
    dst_ = std::make_unique<OciStore>(std::move(*dst));

    BuildOptions o;
    o.state_dir = tmp_->path() + "/state";
    auto b = Builder::open(*src_, o);
    ASSERT_TRUE(b.ok()) << b.error().message;
    builder_ = std::move(*b);
    server_ = std::make_unique<http::Server>(ioc_, http::ServerOptions{});
    service_ = std::make_unique<Service>(*server_, *builder_, ServiceOptions{o.state_dir + "/up"});
    auto addr = server_->listen({"127.0.0.1", 0});
    ASSERT_TRUE(addr.ok()) << addr.error().message;
    registry_ = *addr;
    thread_ = std::thread([this] { ioc_.run(); });
  }
  void TearDown() override {
    if (server_) server_->stop();
    work_.reset();
    ioc_.stop();
    if (thread_.joinable()) thread_.join();
  }

  std::string cache() const { return tmp_->path() + "/cache"; }

  asio::io_context ioc_;
  std::unique_ptr<asio::executor_work_guard<asio::io_context::executor_type>> work_ =
      std::make_unique<asio::executor_work_guard<asio::io_context::executor_type>>(
          ioc_.get_executor());
  std::thread thread_;
  std::unique_ptr<TempDir> tmp_;
  std::unique_ptr<OciStore> src_, dst_;
  std::unique_ptr<Builder> builder_;
  std::unique_ptr<http::Server> server_;
  std::unique_ptr<Service> service_;
  HostPort registry_;
  Manifest two_;
  std::string two_digest_, base_digest_;
};

TEST_F(Pull, PullsVerifiesAndUnpacksOnce) {
  Puller puller(*dst_, cache());
  auto img = puller.pull(registry_, "two", "1");
  ASSERT_TRUE(img.ok()) << img.error().message;
  EXPECT_EQ(img->manifest.digest, two_digest_);
  EXPECT_EQ(img->blobs_fetched, 3u);
  ASSERT_EQ(img->layer_dirs.size(), 2u);
  EXPECT_EQ(testing::read_file(img->layer_dirs[0] + "/app/hello"), "hello\n");
  EXPECT_TRUE(fs::exists(img->layer_dirs[1] + "/bin/busybox"));
  EXPECT_EQ(img->layer_dirs[1], cache() + "/" + two_.layers[0].digest.substr(7));
  auto tagged = dst_->resolve("two:1");
  ASSERT_TRUE(tagged.ok());
  EXPECT_EQ(tagged->digest, two_digest_);
  EXPECT_TRUE(dst_->verify_blob(two_digest_).ok());

  // Again: nothing fetched, nothing unpacked again (same inode).
  struct stat before {};
  ASSERT_EQ(::stat(img->layer_dirs[1].c_str(), &before), 0);
  auto again = puller.pull(registry_, "two", "1");
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(again->blobs_fetched, 0u);
  struct stat after {};
  ASSERT_EQ(::stat(again->layer_dirs[1].c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);

  // By digest: the base shares the cached layer; only its config is new.
  auto base = puller.pull(registry_, "busybox", base_digest_);
  ASSERT_TRUE(base.ok()) << base.error().message;
  EXPECT_EQ(base->blobs_fetched, 1u);
  EXPECT_EQ(base->layer_dirs, std::vector<std::string>{img->layer_dirs[1]});

  // gc: with two:1 untagged only the busybox layer stays.
  ASSERT_TRUE(dst_->untag("two", "1").ok());
  auto gc = gc_layer_cache(*dst_, cache());
  ASSERT_TRUE(gc.ok()) << gc.error().message;
  EXPECT_EQ(gc->kept, 1u);
  EXPECT_EQ(gc->removed, 1u);
  EXPECT_FALSE(fs::exists(img->layer_dirs[0]));
  EXPECT_TRUE(fs::exists(img->layer_dirs[1]));
}

TEST_F(Pull, CorruptedBlobIsRejected) {
  // The registry serves a layer whose bytes no longer match its digest.
  std::string top = two_.layers[1].digest;
  std::string path = src_->blob_path(top).string();
  std::string data = testing::read_file(path);
  data[data.size() / 2] ^= 0x55;
  ::chmod(path.c_str(), 0644);
  testing::write_file(path, data);
  Puller puller(*dst_, cache());
  auto img = puller.pull(registry_, "two", "1");
  ASSERT_FALSE(img.ok());
  EXPECT_NE(img.error().message.find("digest mismatch"), std::string::npos) << img.error().message;
  EXPECT_FALSE(dst_->resolve("two:1").ok());
  EXPECT_FALSE(dst_->has_blob(top));
  EXPECT_FALSE(dst_->has_blob(two_digest_));
  EXPECT_FALSE(fs::exists(cache() + "/" + top.substr(7)));
}

// A hand-written registry over a raw socket: the manifest of two:1 as is, and blobs as `blob`
// answers them (the raw response bytes after the request). One request per connection.
class FakeRegistry {
 public:
  using Answer = std::function<std::string(const std::string& target)>;
  explicit FakeRegistry(Answer answer) : answer_(std::move(answer)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_, 16);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] {
      while (true) {
        int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0 || stop_) {
          if (c >= 0) ::close(c);
          return;
        }
        std::string req;
        char buf[4096];
        while (req.find("\r\n\r\n") == std::string::npos) {
          ssize_t n = ::recv(c, buf, sizeof buf, 0);
          if (n <= 0) break;
          req.append(buf, static_cast<size_t>(n));
        }
        size_t sp = req.find(' ');
        std::string target = req.substr(sp + 1, req.find(' ', sp + 1) - sp - 1);
        std::string out = answer_(target);
        for (size_t off = 0; off < out.size();) {
          ssize_t n = ::send(c, out.data() + off, out.size() - off, MSG_NOSIGNAL);
          if (n <= 0) break;
          off += static_cast<size_t>(n);
        }
        ::close(c);
      }
    });
  }
  ~FakeRegistry() {
    stop_ = true;
    HostPort self{"127.0.0.1", port_};
    int c = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port_);
    ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::close(c);
    thread_.join();
    ::close(fd_);
  }
  HostPort addr() const { return {"127.0.0.1", port_}; }

 private:
  Answer answer_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

std::string http_answer(int status, const std::string& body, const std::string& extra = {}) {
  return "HTTP/1.1 " + std::to_string(status) +
         " X\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extra + "\r\n" + body;
}

TEST_F(Pull, BlobBodiesChunkedShortAndMissing) {
  auto manifest = src_->read_blob(two_digest_);
  ASSERT_TRUE(manifest.ok());
  std::string top = two_.layers[1].digest;
  // mode 0: every blob chunked in small odd pieces; 1: the top layer cut short; 2: it is 404.
  int mode = 0;
  FakeRegistry reg([&](const std::string& target) -> std::string {
    if (target.find("/manifests/") != std::string::npos) return http_answer(200, *manifest);
    std::string digest = target.substr(target.rfind('/') + 1);
    auto body = src_->read_blob(digest);
    if (!body) return http_answer(404, "{}");
    if (digest == top && mode == 1) {
      return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body->size()) + "\r\n\r\n" +
             body->substr(0, body->size() / 2);
    }
    if (digest == top && mode == 2) return http_answer(404, "{\"errors\":[]}");
    std::string out = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (size_t off = 0; off < body->size(); off += 777) {
      std::string piece = body->substr(off, 777);
      char size[32];
      std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
      out += size + piece + "\r\n";
    }
    return out + "0\r\n\r\n";
  });
  Puller puller(*dst_, cache());
  mode = 1;
  auto cut = puller.pull(reg.addr(), "two", "1");
  ASSERT_FALSE(cut.ok());
  EXPECT_FALSE(dst_->resolve("two:1").ok());
  EXPECT_FALSE(dst_->has_blob(top));
  EXPECT_FALSE(fs::exists(cache() + "/" + top.substr(7)));
  mode = 2;
  auto missing = puller.pull(reg.addr(), "two", "1");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("404"), std::string::npos) << missing.error().message;
  EXPECT_FALSE(dst_->resolve("two:1").ok());
  mode = 0;
  auto img = puller.pull(reg.addr(), "two", "1");
  ASSERT_TRUE(img.ok()) << img.error().message;
  EXPECT_EQ(img->manifest.digest, two_digest_);
  EXPECT_EQ(testing::read_file(img->layer_dirs[0] + "/app/hello"), "hello\n");
  EXPECT_TRUE(dst_->verify_blob(top).ok());
  EXPECT_TRUE(dst_->resolve("two:1").ok());
}

TEST_F(Pull, MissingImageAndBadReferences) {
  Puller puller(*dst_, cache());
  auto missing = puller.pull(registry_, "nope", "1");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("404"), std::string::npos) << missing.error().message;
  auto bad = puller.pull(registry_, "two", "sha256:12");
  ASSERT_FALSE(bad.ok());
  // A digest that is not the manifest's: the registry has no such manifest.
  auto wrong = puller.pull(registry_, "two", two_.layers[0].digest);
  ASSERT_FALSE(wrong.ok());
  auto list = dst_->list();
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());
}

}  // namespace
}  // namespace qufop::builder
