// The HTTP layer over real sockets on loopback.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <thread>

#include "common/http_client.h"
#include "common/http_server.h"
#include "common/metrics.h"

namespace qufop::http {
namespace {

using namespace std::chrono_literals;

class HttpTest : public ::testing::Test {
 protected:
  void start(ServerOptions options = {}) {
    server_ = std::make_unique<Server>(ioc_, options, &metrics_);
    server_->route("GET", "/hello", [](const Request& r) {
      return Response::text(200, "hello " + r.query_param("name"));
    });
    server_->route("POST", "/echo", [](const Request& r) {
      return Response{200,
                      std::string(r.header("Content-Type")),
                      {{"X-Len", std::to_string(r.body.size())}},
                      r.body};
    });
    server_->route("GET", "/nothing", [](const Request&) {
      // A 204 has no body: a body set by mistake is not sent, nor a Content-Length. A header
      // with a line break would split the head: dropped.
      return Response{204, "text/plain", {{"X-Ok", "1"}, {"X-Bad", "a\r\nX-Injected: 1"}}, "oops"};
    });
    server_->route("GET", "/throw",
                   [](const Request&) -> Response { throw std::runtime_error("boom"); });
    server_->route_async("GET", "/slow", [this](Request, Responder res) {
      std::thread([res = std::move(res), this]() mutable {
        std::this_thread::sleep_for(200ms);
        ++slow_done_;
        res.send(Response::text(200, "slow"));
      }).detach();
    });
    server_->route_async("GET", "/stream", [](Request r, Responder res) {
      int n = std::stoi(r.query_param("n"));
      std::thread([res = std::move(res), n]() mutable {
        res.start_stream(200, "text/plain");
        for (int i = 0; i < n; ++i) {
          res.write("chunk" + std::to_string(i) + "\n");
          std::this_thread::sleep_for(5ms);
        }
        res.finish();
      }).detach();
    });
    server_->route_prefix("GET", "/v2/", [](Request r, Responder res) {
      res.send(Response::text(200, "prefix " + r.path));
    });
    auto bound = server_->listen({"127.0.0.1", 0});
    ASSERT_TRUE(bound) << bound.error().message;
    port_ = bound->port;
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { ioc_.run(); });
  }

  void TearDown() override {
    if (server_) server_->stop();
    work_.reset();
    ioc_.stop();
    for (auto& t : threads_) t.join();
  }

  // Sends raw bytes and reads until the server closes or `timeout` passes.
  std::string raw_exchange(const std::string& bytes, std::chrono::milliseconds timeout = 3000ms) {
    int fd = connect_raw();
    if (!bytes.empty()) {
      EXPECT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
                static_cast<ssize_t>(bytes.size()));
    }
    std::string out = read_until_close(fd, timeout);
    ::close(fd);
    return out;
  }

  int connect_raw() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port_);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    return fd;
  }

  static std::string read_until_close(int fd, std::chrono::milliseconds timeout) {
    timeval tv{static_cast<time_t>(timeout.count() / 1000),
               static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, n);
    return out;
  }

  boost::asio::io_context ioc_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_{
      ioc_.get_executor()};
  Metrics metrics_;
  std::unique_ptr<Server> server_;
  std::vector<std::thread> threads_;
  uint16_t port_ = 0;
  std::atomic<int> slow_done_{0};
};

TEST_F(HttpTest, KeepAliveServesManyRequestsOnOneConnection) {
  start();
  Client c("127.0.0.1", port_);
  for (int i = 0; i < 50; ++i) {
    auto r = c.get("/hello?name=" + std::to_string(i));
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "hello " + std::to_string(i));
  }
  EXPECT_EQ(server_->open_connections(), 1u);
  EXPECT_EQ(metrics_.value("qufop_http_requests_total", "code=\"200\""), 50);
}

TEST_F(HttpTest, PostBodyRoundTrip) {
  start();
  Client c("127.0.0.1", port_);
  std::string body(1 << 20, 'x');
  auto r = c.post("/echo", body, "application/octet-stream");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body.size(), body.size());
  EXPECT_EQ(r->header("X-Len"), std::to_string(body.size()));
  EXPECT_EQ(r->content_type, "application/octet-stream");
}

TEST_F(HttpTest, BodiesLargerThanTheSocketBuffersGoBothWays) {
  start();
  Client c("127.0.0.1", port_);
  std::string body(6 << 20, 'y');  // under the server's 8 MiB default limit
  for (size_t i = 0; i < body.size(); i += 4093) body[i] = static_cast<char>('a' + i % 26);
  for (int round = 0; round < 2; ++round) {  // the second on the kept-alive connection
    auto r = c.post("/echo", body, "application/octet-stream");
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->status, 200);
    EXPECT_TRUE(r->body == body);
  }
}

TEST_F(HttpTest, NoContentHasNoBodyAndHeadersCannotBeInjected) {
  start();
  Client c("127.0.0.1", port_);
  auto r = c.get("/nothing");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->status, 204);
  EXPECT_EQ(r->body, "");
  EXPECT_EQ(r->header("X-Ok"), "1");
  EXPECT_EQ(r->header("X-Injected"), "");
  EXPECT_EQ(r->header("X-Bad"), "");
  auto after = c.get("/hello?name=n");  // nothing of the 204 is left on the connection
  ASSERT_TRUE(after) << after.error().message;
  EXPECT_EQ(after->body, "hello n");
  Request bad;
  bad.method = "GET";
  bad.target = "/hello";
  bad.headers = {{"X-Evil", "v\r\nX-Injected: 1"}};
  auto refused = c.send(bad);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("X-Evil"), std::string::npos);
}

TEST_F(HttpTest, UnknownPathIs404AndWrongMethodIs405WithJsonError) {
  start();
  Client c("127.0.0.1", port_);
  auto r = c.get("/nope");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->body, R"({"error":"not_found","message":"no such endpoint: /nope"})");
  auto m = c.post("/hello", "{}");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 405);
  EXPECT_NE(m->body.find("method_not_allowed"), std::string::npos);
}

TEST_F(HttpTest, PrefixRouteAndHead) {
  start();
  Client c("127.0.0.1", port_);
  auto r = c.get("/v2/name/blobs/sha256:abc");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "prefix /v2/name/blobs/sha256:abc");
  Request head;
  head.method = "HEAD";
  head.target = "/hello?name=abc";
  auto h = c.send(head);
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(h->body, "");
  EXPECT_EQ(h->header("Content-Length"), "9");
  auto after = c.get("/hello?name=z");  // the connection is still usable after HEAD
  ASSERT_TRUE(after);
  EXPECT_EQ(after->body, "hello z");
}

TEST_F(HttpTest, HandlerExceptionIs500AndServerKeepsServing) {
  start();
  Client c("127.0.0.1", port_);
  auto r = c.get("/throw");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  EXPECT_NE(r->body.find("\"error\":\"internal\""), std::string::npos);
  EXPECT_EQ(c.get("/hello")->status, 200);
}

TEST_F(HttpTest, OversizedBodyIs413AndOthersStillServed) {
  ServerOptions o;
  o.max_body_bytes = 1024;
  start(o);
  Client c("127.0.0.1", port_);
  auto r = c.post("/echo", std::string(4096, 'y'));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->status, 413);
  EXPECT_NE(r->body.find("body_too_large"), std::string::npos);
  Client d("127.0.0.1", port_);
  EXPECT_EQ(d.post("/echo", std::string(1000, 'y'))->status, 200);
}

TEST_F(HttpTest, MalformedRequestIs400AndClosed) {
  start();
  std::string out = raw_exchange("GARBAGE\r\n\r\n");
  EXPECT_EQ(out.rfind("HTTP/1.1 400", 0), 0u) << out;
  EXPECT_NE(out.find("bad_request"), std::string::npos);
  std::string bad_len =
      raw_exchange("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n");
  EXPECT_EQ(bad_len.rfind("HTTP/1.1 400", 0), 0u) << bad_len;
  Client c("127.0.0.1", port_);
  EXPECT_EQ(c.get("/hello")->status, 200);
}

TEST_F(HttpTest, OversizedHeaderIs431) {
  ServerOptions o;
  o.max_header_bytes = 512;
  start(o);
  std::string out = raw_exchange(
      "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(2000, 'a') + "\r\n\r\n");
  EXPECT_EQ(out.rfind("HTTP/1.1 431", 0), 0u) << out;
}

TEST_F(HttpTest, SlowClientIsDisconnectedAtTheHeaderTimeout) {
  ServerOptions o;
  o.header_timeout = 300ms;
  start(o);
  int fd = connect_raw();
  const char* part = "GET /hello HTTP/1.1\r\nHo";
  ::send(fd, part, strlen(part), MSG_NOSIGNAL);
  auto t0 = std::chrono::steady_clock::now();
  std::string out = read_until_close(fd, 5000ms);
  auto waited = std::chrono::steady_clock::now() - t0;
  ::close(fd);
  EXPECT_EQ(out, "");     // closed without an answer
  EXPECT_LT(waited, 3s);  // and well before the client's own 5 s limit
  Client c("127.0.0.1", port_);
  EXPECT_EQ(c.get("/hello")->status, 200);  // others are served meanwhile and after
}

TEST_F(HttpTest, SlowBodyIsDisconnectedAtTheBodyTimeout) {
  ServerOptions o;
  o.body_timeout = 300ms;
  start(o);
  auto t0 = std::chrono::steady_clock::now();
  std::string out = raw_exchange(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly a bit", 5000ms);
  EXPECT_EQ(out, "");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  Client c("127.0.0.1", port_);
  EXPECT_EQ(c.get("/hello")->status, 200);
}

TEST_F(HttpTest, IdleKeepAliveConnectionIsReconnectedByTheClient) {
  ServerOptions o;
  o.header_timeout = 200ms;
  start(o);
  Client c("127.0.0.1", port_);
  EXPECT_EQ(c.get("/hello")->status, 200);
  std::this_thread::sleep_for(400ms);  // the server closes the idle connection meanwhile
  auto r = c.get("/hello?name=again");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->body, "hello again");
}

TEST_F(HttpTest, ExpectContinueIsAnswered) {
  start();
  int fd = connect_raw();
  std::string head =
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
  ::send(fd, head.data(), head.size(), MSG_NOSIGNAL);
  char buf[256];
  ssize_t n = recv(fd, buf, sizeof buf, 0);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, n).rfind("HTTP/1.1 100 Continue", 0), 0u);
  ::send(fd, "hello", 5, MSG_NOSIGNAL);
  n = recv(fd, buf, sizeof buf, 0);
  ASSERT_GT(n, 0);
  std::string rest(buf, n);
  EXPECT_EQ(rest.rfind("HTTP/1.1 200", 0), 0u) << rest;
  ::close(fd);
}

TEST_F(HttpTest, ConcurrentClientsAreServedInParallel) {
  start();
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> clients;
  std::atomic<int> good{0};
  for (int i = 0; i < 16; ++i) {
    clients.emplace_back([&] {
      Client c("127.0.0.1", port_);
      auto r = c.get("/slow");
      if (r && r->status == 200 && r->body == "slow") ++good;
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(good, 16);
  // 16 handlers that each wait 200 ms overlap rather than queue behind each other (16 x 200 ms).
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}

TEST_F(HttpTest, StreamingResponseArrivesInPieces) {
  start();
  Client c("127.0.0.1", port_);
  Request r;
  r.method = "GET";
  r.target = "/stream?n=20";
  std::string all;
  int pieces = 0;
  auto status = c.stream(
      r,
      [&](std::string_view d) {
        all.append(d);
        ++pieces;
        return true;
      },
      5000ms);
  ASSERT_TRUE(status) << status.error().message;
  EXPECT_EQ(*status, 200);
  EXPECT_EQ(all.substr(0, 7), "chunk0\n");
  EXPECT_NE(all.find("chunk19\n"), std::string::npos);
  EXPECT_GT(pieces, 1);
}

TEST_F(HttpTest, StopLetsInFlightRequestsFinish) {
  start();
  std::atomic<int> status{0};
  std::thread client([&] {
    Client c("127.0.0.1", port_);
    auto r = c.get("/slow");
    if (r) status = r->status;
  });
  std::this_thread::sleep_for(50ms);
  server_->stop();
  client.join();
  EXPECT_EQ(status, 200);
  Client late("127.0.0.1", port_, {500ms, 500ms});
  EXPECT_FALSE(late.get("/hello"));  // no longer accepting
}

TEST(HttpListen, PortInUseIsAClearError) {
  boost::asio::io_context ioc;
  Server a(ioc, {});
  auto bound = a.listen({"127.0.0.1", 0});
  ASSERT_TRUE(bound);
  Server b(ioc, {});
  auto r = b.listen({"127.0.0.1", bound->port});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message,
            "bind(127.0.0.1:" + std::to_string(bound->port) + "): Address already in use");
  auto bad = b.listen({"not-an-ip", 1});
  ASSERT_FALSE(bad);
}

TEST(HttpClientErrors, RefusedConnectionSaysSo) {
  // Bind then close to find a port nobody listens on.
  boost::asio::io_context ioc;
  uint16_t port;
  {
    Server s(ioc, {});
    port = s.listen({"127.0.0.1", 0})->port;
  }
  ioc.run();
  Client c("127.0.0.1", port, {500ms, 500ms});
  auto r = c.get("/");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, "unavailable");
  EXPECT_NE(r.error().message.find("connection refused"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace qufop::http
