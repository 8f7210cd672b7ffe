#include "common/http_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <vector>

namespace qufop::http {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

struct Client::Impl {
  Impl(std::string h, uint16_t p, ClientOptions o) : host(std::move(h)), port(p), options(o) {}

  Result<void> connect();
  // Runs the io_context until the pending operation completes.
  void run() {
    ioc.restart();
    ioc.run();
  }
  Result<std::string> head(const Request& r) const;
  Result<void> wait(short events, Clock::time_point deadline, std::string_view what);
  Result<void> send_all(const std::string& head, const std::string& body,
                        Clock::time_point deadline, std::string_view what);
  Result<Response> read_response(const Request& r, Clock::time_point deadline);
  Result<Response> exchange(const Request& r);
  // Closes the connection and says what failed where.
  Error fail(std::string_view what, beast::error_code ec);
  Error describe(std::string_view what, beast::error_code ec) const;
  Error cancelled() const {
    return {"cancelled", "stream from " + host + ":" + std::to_string(port) + ": cancelled",
            ECANCELED};
  }
  // stream()'s exchange on the connected socket; leaves closing it to stream().
  Result<int> stream_on(const Request& request,
                        const std::function<bool(int, const Headers&)>& on_head,
                        const std::function<bool(std::string_view)>& on_data,
                        std::chrono::milliseconds timeout);

  std::string host;
  uint16_t port;
  ClientOptions options;
  net::io_context ioc{1};
  std::optional<beast::tcp_stream> stream;
  beast::flat_buffer buffer;
};

Error Client::Impl::fail(std::string_view what, beast::error_code ec) {
  stream.reset();
  return describe(what, ec);
}

Error Client::Impl::describe(std::string_view what, beast::error_code ec) const {
  std::string where = std::string(what) + " " + host + ":" + std::to_string(port);
  if (ec == beast::error::timeout) return {"timeout", where + ": timed out", ETIMEDOUT};
  if (ec == net::error::connection_refused) {
    return {"unavailable", where + ": connection refused (is the daemon running?)", ECONNREFUSED};
  }
  return {"unavailable", where + ": " + ec.message(), ec.value()};
}

Result<void> Client::Impl::connect() {
  if (stream) return ok();
  beast::error_code ec;
  tcp::resolver resolver(ioc);
  tcp::resolver::results_type results;
  resolver.async_resolve(host, std::to_string(port),
                         [&](beast::error_code e, tcp::resolver::results_type r) {
                           ec = e;
                           results = std::move(r);
                         });
  run();
  if (ec) return Error{"unavailable", "resolve " + host + ": " + ec.message(), 0};
  stream.emplace(ioc);
  stream->expires_after(options.connect_timeout);
  stream->async_connect(results, [&](beast::error_code e, const tcp::endpoint&) { ec = e; });
  run();
  if (ec) return fail("connect", ec);
  stream->socket().set_option(tcp::no_delay(true), ec);
  buffer.clear();
  return ok();
}

// The request's head as Beast would write it (Host, User-Agent, the caller's headers,
// Content-Length when there is a body or the method takes one). A CR or LF in a header would
// split the head: refused.
Result<std::string> Client::Impl::head(const Request& r) const {
  std::string method = r.method.empty() ? "GET" : r.method;
  std::string out;
  out.reserve(256);
  out += method;
  out += ' ';
  out += r.target.empty() ? "/" : r.target;
  out += " HTTP/1.1\r\nHost: " + host + ":" + std::to_string(port) +
         "\r\nUser-Agent: qufop/" QUFOP_VERSION "\r\n";
  for (const auto& [k, v] : r.headers) {
    if (!append_header_line(out, k, v)) {
      return Error::invalid("HTTP header '" + k + "': a name or value with CR, LF or ':'");
    }
  }
  if (!r.body.empty() || (method != "GET" && method != "HEAD" && method != "DELETE")) {
    out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
  }
  out += "\r\n";
  return out;
}

// Waits until the connection is ready for `events` or the deadline passes.
Result<void> Client::Impl::wait(short events, Clock::time_point deadline, std::string_view what) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return describe(what, beast::error::timeout);
    pollfd p{stream->socket().native_handle(), events, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count() + 1, INT32_MAX)));
    if (n > 0) return ok();
    if (n < 0 && errno != EINTR) {
      return describe(what, beast::error_code(errno, beast::system_category()));
    }
  }
}

// One request and its response on the kept-alive connection with plain system calls on its
// (non-blocking) socket: a sendmsg of head and body, then poll and recv until the parser holds
// the whole response — three calls for a small exchange, where running the io_context took
// about ten (timer updates, epoll waits). The deadline bounds the whole exchange.
Result<Response> Client::Impl::exchange(const Request& r) {
  QF_TRY(connect());
  auto wire = head(r);
  if (!wire) return wire.error();
  auto deadline = Clock::now() + options.request_timeout;
  auto sent = send_all(*wire, r.body, deadline, r.method + " " + r.target + " to");
  auto res = sent ? read_response(r, deadline) : Result<Response>(sent.error());
  if (!res) stream.reset();  // a failed exchange leaves the connection in no known state
  return res;
}

Result<void> Client::Impl::send_all(const std::string& head, const std::string& body,
                                    Clock::time_point deadline, std::string_view what) {
  int fd = stream->socket().native_handle();
  size_t sent = 0;
  size_t total = head.size() + body.size();
  while (sent < total) {
    iovec iov[2];
    int count = 0;
    if (sent < head.size()) {
      iov[count++] = {const_cast<char*>(head.data()) + sent, head.size() - sent};
      iov[count++] = {const_cast<char*>(body.data()), body.size()};
    } else {
      size_t from = sent - head.size();
      iov[count++] = {const_cast<char*>(body.data()) + from, body.size() - from};
    }
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = count;
    ssize_t n = ::sendmsg(fd, &mh, MSG_NOSIGNAL);
    if (n >= 0) {
      sent += static_cast<size_t>(n);
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      QF_TRY(wait(POLLOUT, deadline, what));
    } else if (errno != EINTR) {
      return describe(what, beast::error_code(errno, beast::system_category()));
    }
  }
  return ok();
}

Result<Response> Client::Impl::read_response(const Request& r, Clock::time_point deadline) {
  std::string from = r.method + " " + r.target + " from";
  bhttp::response_parser<bhttp::string_body> parser;
  parser.eager(true);
  parser.body_limit(options.max_body_bytes);
  if (r.method == "HEAD") parser.skip(true);
  int fd = stream->socket().native_handle();
  beast::error_code ec;
  for (;;) {
    // Whatever the buffer holds first: a response may arrive in one piece with the last.
    while (buffer.size() > 0 && !parser.is_done()) {
      size_t used = parser.put(buffer.data(), ec);
      buffer.consume(used);
      if (ec == bhttp::error::need_more) {
        ec = {};
        break;
      }
      if (ec) return describe(from, ec);
      if (used == 0) break;
    }
    if (parser.is_done()) break;
    QF_TRY(wait(POLLIN, deadline, from));
    auto space = buffer.prepare(std::max<size_t>(16384, buffer.capacity() - buffer.size()));
    ssize_t n = ::recv(fd, space.data(), space.size(), 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n < 0) return describe(from, beast::error_code(errno, beast::system_category()));
    if (n == 0) {
      // The server closed: the end of a body that runs to EOF, else a cut-off response (or a
      // kept-alive connection the server dropped: send() retries that once).
      if (!parser.got_some()) return describe(from, net::error::eof);
      parser.put_eof(ec);
      if (ec || !parser.is_done()) return describe(from, ec ? ec : net::error::eof);
      break;
    }
    buffer.commit(static_cast<size_t>(n));
  }
  auto msg = parser.release();
  Response out;
  out.status = static_cast<int>(msg.result_int());
  out.content_type = std::string(msg[bhttp::field::content_type]);
  for (const auto& f : msg) out.headers.emplace_back(f.name_string(), f.value());
  out.body = std::move(msg.body());
  if (!msg.keep_alive()) stream.reset();
  return out;
}

Client::Client(std::string host, uint16_t port, ClientOptions options)
    : impl_(std::make_unique<Impl>(std::move(host), port, options)) {}

Client::~Client() = default;

std::string Client::endpoint() const { return impl_->host + ":" + std::to_string(impl_->port); }

Result<Response> Client::send(const Request& request) {
  bool reused = impl_->stream.has_value();
  auto res = impl_->exchange(request);
  // A keep-alive connection may have been closed by the server while idle; that is not the
  // request's failure, so try once on a fresh connection.
  if (!res && reused && res.error().code == "unavailable") return impl_->exchange(request);
  return res;
}

Result<Response> Client::get(std::string_view target) {
  Request r;
  r.method = "GET";
  r.target = target;
  return send(r);
}

Result<Response> Client::post(std::string_view target, std::string body, std::string content_type) {
  Request r;
  r.method = "POST";
  r.target = target;
  r.headers.emplace_back("Content-Type", std::move(content_type));
  r.body = std::move(body);
  return send(r);
}

void StreamCancel::cancel() {
  std::lock_guard lock(mu_);
  cancelled_ = true;
  // Wakes the stream's poll/epoll wait with EOF (or EPIPE for a write); the fd is still open,
  // for the stream detaches under mu_ before it closes it.
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

bool StreamCancel::cancelled() const {
  std::lock_guard lock(mu_);
  return cancelled_;
}

bool StreamCancel::attach(int fd) {
  std::lock_guard lock(mu_);
  if (cancelled_) return false;
  fd_ = fd;
  return true;
}

void StreamCancel::detach() {
  std::lock_guard lock(mu_);
  fd_ = -1;
}

// Keeps a stream's socket registered with its StreamCancel (if any) for the scope's life; the
// socket must outlive the scope.
class StreamCancel::Scope {
 public:
  Scope(StreamCancel* c, int fd) : c_(c), attached_(!c || c->attach(fd)) {}
  ~Scope() {
    if (c_ && attached_) c_->detach();
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;
  bool cancelled() const { return !attached_; }

 private:
  StreamCancel* c_;
  bool attached_;
};

Result<int> Client::stream(const Request& request,
                           const std::function<bool(std::string_view)>& on_data,
                           std::chrono::milliseconds timeout, StreamCancel* cancel) {
  return stream(request, nullptr, on_data, timeout, cancel);
}

Result<int> Client::stream(const Request& request,
                           const std::function<bool(int status, const Headers& headers)>& on_head,
                           const std::function<bool(std::string_view)>& on_data,
                           std::chrono::milliseconds timeout, StreamCancel* cancel) {
  auto& im = *impl_;
  im.stream.reset();  // a stream owns its connection from start to end
  if (cancel && cancel->cancelled()) return im.cancelled();
  QF_TRY(im.connect());
  Result<int> res = 0;
  {
    // Registered only while open: the socket is closed below, after the scope.
    StreamCancel::Scope scope(cancel, im.stream->socket().native_handle());
    res = scope.cancelled() ? Result<int>(im.cancelled())
                            : im.stream_on(request, on_head, on_data, timeout);
  }
  im.stream.reset();
  // A cancelled stream fails with whatever the shutdown caused (EOF, EPIPE): say why instead.
  if (!res && cancel && cancel->cancelled()) return im.cancelled();
  return res;
}

Result<int> Client::Impl::stream_on(const Request& request,
                                    const std::function<bool(int, const Headers&)>& on_head,
                                    const std::function<bool(std::string_view)>& on_data,
                                    std::chrono::milliseconds timeout) {
  auto wire = head(request);
  if (!wire) return wire.error();
  QF_TRY(send_all(*wire, request.body, Clock::now() + timeout, "stream to"));
  beast::error_code ec;
  bhttp::response_parser<bhttp::buffer_body> parser;
  parser.body_limit(boost::none);
  stream->expires_after(timeout);
  bhttp::async_read_header(*stream, buffer, parser, [&](beast::error_code e, size_t) { ec = e; });
  run();
  if (ec) return describe("stream from", ec);
  int status = static_cast<int>(parser.get().result_int());
  if (on_head) {
    Headers headers;
    for (const auto& f : parser.get()) {
      headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    }
    if (!on_head(status, headers)) return status;
  }
  // Large blobs stream through here: read in big pieces (Beast sizes each read by the free
  // capacity of the buffer, which otherwise stays at a few hundred bytes).
  buffer.reserve(1 << 20);
  std::vector<char> buf(1 << 20);
  bool go_on = true;
  while (go_on && !parser.is_done()) {
    parser.get().body().data = buf.data();
    parser.get().body().size = buf.size();
    stream->expires_after(timeout);
    bhttp::async_read_some(*stream, buffer, parser, [&](beast::error_code e, size_t) { ec = e; });
    run();
    if (ec == bhttp::error::need_buffer) ec = {};
    if (ec) return describe("stream from", ec);
    size_t got = buf.size() - parser.get().body().size;
    if (got > 0) go_on = on_data(std::string_view(buf.data(), got));
  }
  return status;
}

}  // namespace qufop::http
