#include "common/http_server.h"

#include <spdlog/spdlog.h>

#include <sys/socket.h>

#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <deque>
#include <map>
#include <mutex>
#include <optional>

#include "common/metrics.h"

namespace qufop::http {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

struct Route {
  std::string method;
  std::string path;
  bool prefix = false;
  Handler handler;
};

struct Server::Impl {
  Impl(net::io_context& io, ServerOptions opts, Metrics* m)
      : ioc(io), options(std::move(opts)), metrics(m) {}

  void accept();
  const Route* find_route(std::string_view method, std::string_view path, bool* path_known) const;
  void count(int status);

  net::io_context& ioc;
  ServerOptions options;
  Metrics* metrics;
  std::vector<Route> routes;  // filled before listen(); read-only while serving
  std::optional<tcp::acceptor> acceptor;
  std::atomic<bool> stopping{false};
  mutable std::mutex mu;
  std::map<detail::Session*, std::weak_ptr<detail::Session>> sessions;
  std::weak_ptr<Impl> self;
};

namespace detail {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, std::shared_ptr<Server::Impl> server)
      : stream_(std::move(socket)), server_(std::move(server)) {
    beast::error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec) remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
  }

  ~Session() {
    std::lock_guard lock(server_->mu);
    server_->sessions.erase(this);
  }

  void start() {
    {
      std::lock_guard lock(server_->mu);
      server_->sessions[this] = weak_from_this();
    }
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_header(); });
  }

  // Called on the strand by Server::stop().
  void stop_if_idle() {
    keep_alive_ = false;
    if (state_ == State::kReading) close();
  }

  void complete(Response response);
  void stream_start(int status, std::string content_type, Headers headers);
  void stream_write(std::string chunk);
  void stream_finish();
  bool closed() const { return closed_; }
  net::any_io_executor executor() { return stream_.get_executor(); }

 private:
  enum class State { kReading, kHandling, kWriting, kStreaming, kClosed };

  void read_header();
  void on_header(beast::error_code ec);
  void read_body();
  void on_body(beast::error_code ec);
  void handle();
  void reply_error_and_close(int status, std::string_view code, std::string_view message);
  void on_written(beast::error_code ec, bool close_after);
  void pump_stream();
  void watch_peer_close();
  void close();

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::shared_ptr<Server::Impl> server_;
  std::string remote_;
  State state_ = State::kReading;
  bool keep_alive_ = true;
  bool head_ = false;
  // Streaming state: chunks queued on the strand and written one at a time.
  std::optional<bhttp::response<bhttp::empty_body>> stream_head_;
  std::optional<bhttp::response_serializer<bhttp::empty_body>> stream_serializer_;
  std::deque<std::string> chunks_;
  bool head_sent_ = false;
  bool writing_ = false;
  bool finish_requested_ = false;
  std::atomic<bool> closed_{false};
};

void Session::read_header() {
  if (server_->stopping) return close();
  state_ = State::kReading;
  parser_.emplace();
  parser_->header_limit(static_cast<uint32_t>(server_->options.max_header_bytes));
  parser_->body_limit(server_->options.max_body_bytes);
  stream_.expires_after(server_->options.header_timeout);
  bhttp::async_read_header(
      stream_, buffer_, *parser_,
      [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
}

void Session::on_header(beast::error_code ec) {
  if (ec == bhttp::error::body_limit) {
    return reply_error_and_close(
        413, "body_too_large",
        "request body over " + std::to_string(server_->options.max_body_bytes) + " bytes");
  }
  if (ec == bhttp::error::header_limit) {
    return reply_error_and_close(431, "header_too_large", "request head too large");
  }
  if (ec == bhttp::error::end_of_stream || ec == beast::error::timeout ||
      ec == net::error::operation_aborted || ec == net::error::connection_reset ||
      ec == net::error::eof) {
    return close();
  }
  if (ec) return reply_error_and_close(400, "bad_request", "malformed request: " + ec.message());
  state_ = State::kHandling;
  auto& req = parser_->get();
  if (beast::iequals(req[bhttp::field::expect], "100-continue") && !parser_->is_done()) {
    // Clients that ask wait for this before sending a large body.
    auto cont = std::make_shared<bhttp::response<bhttp::empty_body>>(bhttp::status::continue_, 11);
    stream_.expires_after(server_->options.write_timeout);
    return bhttp::async_write(stream_, *cont,
                              [self = shared_from_this(), cont](beast::error_code ec, size_t) {
                                if (ec) return self->close();
                                self->read_body();
                              });
  }
  read_body();
}

void Session::read_body() {
  stream_.expires_after(server_->options.body_timeout);
  bhttp::async_read(
      stream_, buffer_, *parser_,
      [self = shared_from_this()](beast::error_code ec, size_t) { self->on_body(ec); });
}

void Session::on_body(beast::error_code ec) {
  if (ec == bhttp::error::body_limit) {
    return reply_error_and_close(
        413, "body_too_large",
        "request body over " + std::to_string(server_->options.max_body_bytes) + " bytes");
  }
  // On a timeout tcp_stream has closed the socket already: the slow client just loses it.
  if (ec == beast::error::timeout || ec == bhttp::error::end_of_stream || ec == net::error::eof ||
      ec == net::error::connection_reset || ec == net::error::operation_aborted) {
    return close();
  }
  if (ec) return reply_error_and_close(400, "bad_request", "malformed request: " + ec.message());
  handle();
}

void Session::handle() {
  auto msg = parser_->release();
  keep_alive_ = keep_alive_ && msg.keep_alive() && !server_->stopping;
  Request req;
  req.method = std::string(msg.method_string());
  req.target = std::string(msg.target());
  std::tie(req.path, req.query) = split_target(req.target);
  for (const auto& f : msg) req.headers.emplace_back(f.name_string(), f.value());
  req.body = std::move(msg.body());
  req.remote = remote_;
  head_ = req.method == "HEAD";

  bool path_known = false;
  const Route* route = server_->find_route(head_ ? "GET" : req.method, req.path, &path_known);
  Responder responder(shared_from_this());
  if (!route) {
    if (path_known) {
      return responder.send(Response::error(405, "method_not_allowed",
                                            req.method + " is not allowed on " + req.path));
    }
    return responder.send(Response::error(404, "not_found", "no such endpoint: " + req.path));
  }
  try {
    route->handler(std::move(req), std::move(responder));
  } catch (const std::exception& e) {
    // The responder was moved into the handler; its destructor answers 500 if nothing was sent.
    spdlog::error("handler for {} threw: {}", route->path, e.what());
  }
}

namespace {

// The response's bytes: status line, Server, Content-Type, the handler's headers (one with a CR
// or LF is dropped: it would split the head), Content-Length, Connection: close when the
// connection ends. No body for HEAD (the length still tells the GET body's) nor for 1xx, 204
// and 304, which have none.
std::string serialize(const Response& r, std::string_view server_name, bool keep_alive, bool head) {
  bool bodyless = r.status < 200 || r.status == 204 || r.status == 304;
  std::string out;
  out.reserve(160 + r.body.size());
  out += "HTTP/1.1 ";
  out += std::to_string(r.status);
  out += ' ';
  out += bhttp::obsolete_reason(static_cast<bhttp::status>(r.status));
  out += "\r\nServer: ";
  out += server_name;
  out += "\r\nContent-Type: ";
  out += r.content_type;
  out += "\r\n";
  for (const auto& [k, v] : r.headers) {
    if (!append_header_line(out, k, v)) {
      spdlog::warn("dropping response header '{}': CR, LF or ':' in its name or value", k);
    }
  }
  if (!bodyless) out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
  if (!keep_alive) out += "Connection: close\r\n";
  out += "\r\n";
  if (!head && !bodyless) out += r.body;
  return out;
}

}  // namespace

void Session::complete(Response response) {
  if (state_ != State::kHandling) return;
  state_ = State::kWriting;
  server_->count(response.status);
  auto wire = serialize(response, server_->options.server_name, keep_alive_, head_);
  bool close_after = !keep_alive_;
  // Almost every response fits the socket's send buffer: one send(2) here, with no write
  // operation, timer or completion hand-off (the socket is non-blocking: Asio made it so for
  // the reads). What does not fit goes out the usual way, bounded by the write timeout.
  ssize_t sent = ::send(stream_.socket().native_handle(), wire.data(), wire.size(), MSG_NOSIGNAL);
  if (sent == static_cast<ssize_t>(wire.size())) return on_written({}, close_after);
  if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
    return on_written(beast::error_code(errno, beast::system_category()), close_after);
  }
  auto rest = std::make_shared<std::string>(wire.substr(sent > 0 ? static_cast<size_t>(sent) : 0));
  stream_.expires_after(server_->options.write_timeout);
  net::async_write(stream_, net::buffer(*rest),
                   [self = shared_from_this(), rest, close_after](beast::error_code ec, size_t) {
                     self->on_written(ec, close_after);
                   });
}

void Session::reply_error_and_close(int status, std::string_view code, std::string_view message) {
  spdlog::debug("{}: {} {}", remote_, status, message);
  keep_alive_ = false;
  state_ = State::kHandling;
  complete(Response::error(status, code, message));
}

void Session::on_written(beast::error_code ec, bool close_after) {
  if (ec || close_after) {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    return close();
  }
  read_header();
}

void Session::stream_start(int status, std::string content_type, Headers headers) {
  if (state_ != State::kHandling) return;
  state_ = State::kStreaming;
  server_->count(status);
  stream_head_.emplace(static_cast<bhttp::status>(status), 11);
  stream_head_->set(bhttp::field::server, server_->options.server_name);
  stream_head_->set(bhttp::field::content_type, content_type);
  for (auto& [k, v] : headers) stream_head_->set(k, v);
  stream_head_->keep_alive(keep_alive_);
  stream_head_->chunked(true);
  stream_serializer_.emplace(*stream_head_);
  watch_peer_close();
  pump_stream();
}

void Session::stream_write(std::string chunk) {
  if (state_ != State::kStreaming || chunk.empty()) return;
  chunks_.push_back(std::move(chunk));
  pump_stream();
}

void Session::stream_finish() {
  if (state_ != State::kStreaming) return;
  finish_requested_ = true;
  pump_stream();
}

// Writes the head, then queued chunks one at a time, then the last chunk.
void Session::pump_stream() {
  if (writing_ || state_ != State::kStreaming) return;
  auto done = [self = shared_from_this()](beast::error_code ec, size_t) {
    self->writing_ = false;
    if (ec) {
      self->closed_ = true;
      return self->close();
    }
    self->pump_stream();
  };
  stream_.expires_after(server_->options.write_timeout);
  writing_ = true;
  if (!head_sent_) {
    head_sent_ = true;
    return bhttp::async_write_header(stream_, *stream_serializer_, done);
  }
  if (!chunks_.empty()) {
    return net::async_write(stream_, bhttp::make_chunk(net::buffer(chunks_.front())),
                            [self = shared_from_this(), done](beast::error_code ec, size_t n) {
                              self->chunks_.pop_front();
                              done(ec, n);
                            });
  }
  if (finish_requested_) {
    return net::async_write(stream_, bhttp::make_chunk_last(),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              self->writing_ = false;
                              self->stream_serializer_.reset();
                              self->stream_head_.reset();
                              self->state_ = State::kWriting;
                              self->on_written(ec, !self->keep_alive_);
                            });
  }
  writing_ = false;
  stream_.expires_never();
}

// A streaming response may idle for long; notice a client that hung up without a write failing.
void Session::watch_peer_close() {
  stream_.socket().async_wait(
      tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
        if (ec) return;
        char byte;
        beast::error_code rec;
        size_t n =
            self->stream_.socket().receive(net::buffer(&byte, 1), tcp::socket::message_peek, rec);
        if (rec || n == 0) {
          self->closed_ = true;
          if (self->state_ == State::kStreaming && !self->writing_) self->close();
        }
      });
}

void Session::close() {
  state_ = State::kClosed;
  closed_ = true;
  beast::error_code ignored;
  stream_.socket().close(ignored);
}

}  // namespace detail

Responder::Responder(std::shared_ptr<detail::Session> session) : session_(std::move(session)) {}
Responder::Responder(Responder&&) noexcept = default;
Responder& Responder::operator=(Responder&&) noexcept = default;

Responder::~Responder() {
  if (session_) {
    send(Response::error(500, "internal", "the handler returned no response"));
  }
}

void Responder::send(Response response) {
  if (!session_) return;
  auto s = std::move(session_);
  net::dispatch(s->executor(),
                [s, r = std::move(response)]() mutable { s->complete(std::move(r)); });
}

void Responder::start_stream(int status, std::string content_type, Headers headers) {
  if (!session_) return;
  net::post(session_->executor(),
            [s = session_, status, ct = std::move(content_type), h = std::move(headers)]() mutable {
              s->stream_start(status, std::move(ct), std::move(h));
            });
}

void Responder::write(std::string chunk) {
  if (!session_) return;
  net::post(session_->executor(),
            [s = session_, c = std::move(chunk)]() mutable { s->stream_write(std::move(c)); });
}

void Responder::finish() {
  if (!session_) return;
  auto s = std::move(session_);
  net::post(s->executor(), [s] { s->stream_finish(); });
}

bool Responder::closed() const { return !session_ || session_->closed(); }

void Server::Impl::accept() {
  acceptor->async_accept(net::make_strand(ioc),
                         [this, keep = self.lock()](beast::error_code ec, tcp::socket socket) {
                           if (stopping || !acceptor->is_open()) return;
                           if (!ec) {
                             std::make_shared<detail::Session>(std::move(socket), keep)->start();
                           } else if (ec != net::error::operation_aborted) {
                             // EMFILE and the like: say so and keep accepting rather than die.
                             spdlog::warn("accept: {}", ec.message());
                           }
                           accept();
                         });
}

const Route* Server::Impl::find_route(std::string_view method, std::string_view path,
                                      bool* path_known) const {
  const Route* best = nullptr;
  for (const auto& r : routes) {
    bool match = r.prefix ? path.substr(0, r.path.size()) == r.path : path == r.path;
    if (!match) continue;
    *path_known = true;
    if (r.method != method) continue;
    if (!r.prefix) return &r;
    if (!best || r.path.size() > best->path.size()) best = &r;
  }
  return best;
}

void Server::Impl::count(int status) {
  if (metrics) metrics->add("qufop_http_requests_total", "code=\"" + std::to_string(status) + "\"");
}

Server::Server(net::io_context& ioc, ServerOptions options, Metrics* metrics)
    : impl_(std::make_shared<Impl>(ioc, std::move(options), metrics)) {
  impl_->self = impl_;
  if (metrics) {
    metrics->describe("qufop_http_requests_total", Metrics::Type::kCounter,
                      "HTTP requests answered, by status code.");
    metrics->describe("qufop_http_open_connections", Metrics::Type::kGauge,
                      "HTTP connections open now.");
    metrics->set_callback("qufop_http_open_connections", "",
                          [impl = std::weak_ptr<Impl>(impl_)]() -> double {
                            auto i = impl.lock();
                            if (!i) return 0;
                            std::lock_guard lock(i->mu);
                            return static_cast<double>(i->sessions.size());
                          });
  }
}

Server::~Server() { stop(); }

void Server::route(std::string method, std::string path, SimpleHandler handler) {
  impl_->routes.push_back(
      {std::move(method), std::move(path), false,
       [h = std::move(handler)](Request req, Responder res) { res.send(h(req)); }});
}

void Server::route_async(std::string method, std::string path, Handler handler) {
  impl_->routes.push_back({std::move(method), std::move(path), false, std::move(handler)});
}

void Server::route_prefix(std::string method, std::string prefix, Handler handler) {
  impl_->routes.push_back({std::move(method), std::move(prefix), true, std::move(handler)});
}

Result<HostPort> Server::listen(const HostPort& address) {
  beast::error_code ec;
  auto ip = net::ip::make_address(address.host, ec);
  if (ec) return Error::invalid("listen address '" + address.host + "': not an IP address");
  tcp::endpoint ep(ip, address.port);
  auto& acc = impl_->acceptor.emplace(impl_->ioc);
  auto fail = [&](const char* call) {
    Error e = Error::sys(std::string(call) + "(" + address.str() + ")", ec.value());
    impl_->acceptor.reset();
    return e;
  };
  acc.open(ep.protocol(), ec);
  if (ec) return fail("socket");
  acc.set_option(net::socket_base::reuse_address(true), ec);
  if (ec) return fail("setsockopt");
  acc.bind(ep, ec);
  if (ec) return fail("bind");
  acc.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return fail("listen");
  auto bound = acc.local_endpoint(ec);
  if (ec) return fail("getsockname");
  impl_->accept();
  return HostPort{bound.address().to_string(), bound.port()};
}

void Server::stop() {
  if (impl_->stopping.exchange(true)) return;
  net::post(impl_->ioc, [impl = impl_] {
    beast::error_code ignored;
    if (impl->acceptor) impl->acceptor->close(ignored);
  });
  std::vector<std::shared_ptr<detail::Session>> live;
  {
    std::lock_guard lock(impl_->mu);
    for (auto& [raw, weak] : impl_->sessions) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
  }
  for (auto& s : live) net::post(s->executor(), [s] { s->stop_if_idle(); });
}

size_t Server::open_connections() const {
  std::lock_guard lock(impl_->mu);
  return impl_->sessions.size();
}

}  // namespace qufop::http
