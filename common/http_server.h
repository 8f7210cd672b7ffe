// HTTP/1.1 server on Boost.Beast: async, keep-alive, per-phase timeouts, header/body limits,
// JSON error bodies, chunked streaming responses, graceful stop. Beast stays in the .cc.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "common/config.h"
#include "common/http.h"
#include "common/result.h"

namespace boost::asio {
class io_context;
}

namespace qufop {
class Metrics;
}

namespace qufop::http {

namespace detail {
class Session;
}

// Completes one request exactly once, from any thread: either send() a whole response, or
// start_stream() then write() pieces and finish(). Dropping it unanswered sends a 500.
class Responder {
 public:
  explicit Responder(std::shared_ptr<detail::Session> session);
  Responder(Responder&&) noexcept;
  Responder& operator=(Responder&&) noexcept;
  Responder(const Responder&) = delete;
  Responder& operator=(const Responder&) = delete;
  ~Responder();

  void send(Response response);

  // Chunked transfer: the headers go now, each write() is one chunk, finish() ends the body.
  void start_stream(int status, std::string content_type, Headers headers = {});
  void write(std::string chunk);
  void finish();
  // True once the client went away; a streaming producer should stop then.
  bool closed() const;

 private:
  std::shared_ptr<detail::Session> session_;
};

using Handler = std::function<void(Request, Responder)>;
using SimpleHandler = std::function<Response(const Request&)>;

struct ServerOptions {
  size_t max_body_bytes = 8u << 20;
  size_t max_header_bytes = 16u << 10;
  // Keep-alive wait plus the whole request head; a client slower than this is disconnected.
  std::chrono::milliseconds header_timeout{60'000};
  // The request body, once the head has arrived.
  std::chrono::milliseconds body_timeout{30'000};
  std::chrono::milliseconds write_timeout{30'000};
  std::string server_name = "qufop";
};

class Server {
 public:
  Server(boost::asio::io_context& ioc, ServerOptions options, Metrics* metrics = nullptr);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Exact path match. HEAD is answered by the GET route without its body.
  void route(std::string method, std::string path, SimpleHandler handler);
  void route_async(std::string method, std::string path, Handler handler);
  // Longest matching prefix wins after exact routes, e.g. "/v2/".
  void route_prefix(std::string method, std::string prefix, Handler handler);

  // Binds and starts accepting; returns the bound address (the real port when port was 0).
  Result<HostPort> listen(const HostPort& address);

  // Stops accepting and closes idle connections; requests in flight finish, then close.
  void stop();
  size_t open_connections() const;

  struct Impl;  // public so the .cc's session type can name it

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace qufop::http
