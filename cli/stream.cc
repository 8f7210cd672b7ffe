#include "cli/stream.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <climits>
#include <cstring>
#include <vector>

#include "common/fd.h"

namespace qufop::cli {
namespace {

std::string endpoint(const std::string& host, uint16_t port) {
  return host + ":" + std::to_string(port);
}

Result<int> dial(const std::string& host, uint16_t port, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  std::string h = host;
  if (h.size() > 1 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  int rc = ::getaddrinfo(h.c_str(), std::to_string(port).c_str(), &hints, &list);
  if (rc != 0) return Error{"unavailable", "resolve " + host + ": " + ::gai_strerror(rc), 0};
  int last_err = ECONNREFUSED;
  for (addrinfo* a = list; a != nullptr; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last_err = errno;
      continue;
    }
    // SO_SNDTIMEO also bounds a blocking connect() on Linux.
    timeval tv{static_cast<time_t>(timeout.count() / 1000),
               static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      ::freeaddrinfo(list);
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      return fd;
    }
    last_err = errno == EINPROGRESS || errno == EAGAIN ? ETIMEDOUT : errno;
    ::close(fd);
  }
  ::freeaddrinfo(list);
  std::string what = "connect " + endpoint(host, port);
  if (last_err == ETIMEDOUT) return Error{"timeout", what + ": timed out", ETIMEDOUT};
  if (last_err == ECONNREFUSED) {
    return Error{"unavailable", what + ": connection refused", ECONNREFUSED};
  }
  return Error{"unavailable", what + ": " + std::strerror(last_err), last_err};
}

// Waits for `events` on fd; false on timeout.
bool wait_for(int fd, short events, std::chrono::milliseconds timeout) {
  pollfd p{fd, events, 0};
  for (;;) {
    // Longer than poll's int milliseconds means "no bound" (a followed log).
    int ms = timeout.count() > INT_MAX ? -1 : static_cast<int>(timeout.count());
    int n = ::poll(&p, 1, ms);
    if (n < 0 && errno == EINTR) continue;
    return n > 0;
  }
}

// Writes everything; false (errno set) when the peer went away or on timeout.
bool write_all(int fd, std::string_view data, std::chrono::milliseconds timeout) {
  while (!data.empty()) {
    if (!wait_for(fd, POLLOUT, timeout)) {
      errno = ETIMEDOUT;
      return false;
    }
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Sends headers and body. A server may answer (and close) before taking the whole body, such as
// a refusal; the caller reads the answer anyway, so a failed write is reported, not fatal.
Result<void> send_request(int fd, const std::string& host, uint16_t port, const http::Request& req,
                          int body_fd, uint64_t body_size, const StreamCallbacks& cb,
                          std::chrono::milliseconds silence) {
  uint64_t total = body_fd >= 0 ? body_size : req.body.size();
  std::string head = req.method + " " + req.target + " HTTP/1.1\r\n";
  head += "Host: " + endpoint(host, port) + "\r\n";
  head += "User-Agent: qufopctl/" QUFOP_VERSION "\r\n";
  for (const auto& [k, v] : req.headers) head += k + ": " + v + "\r\n";
  head += "Content-Length: " + std::to_string(total) + "\r\nConnection: close\r\n\r\n";
  if (!write_all(fd, head, silence)) return Error::sys("send to " + endpoint(host, port), errno);
  std::vector<char> buf(256 << 10);
  uint64_t sent = 0;
  while (sent < total) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), total - sent));
    std::string_view piece;
    if (body_fd >= 0) {
      ssize_t n = ::pread(body_fd, buf.data(), want, static_cast<off_t>(sent));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Error::sys("read upload", errno);
      if (n == 0) return Error::io("read upload: file shrank while uploading");
      piece = std::string_view(buf.data(), static_cast<size_t>(n));
    } else {
      piece = std::string_view(req.body).substr(sent, want);
    }
    if (!write_all(fd, piece, silence)) return Error::sys("send to " + endpoint(host, port), errno);
    sent += piece.size();
    if (cb.on_progress) cb.on_progress(sent, total);
  }
  if (total == 0 && cb.on_progress) cb.on_progress(0, 0);
  return ok();
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

Result<void> ChunkDecoder::feed(std::string_view raw,
                                const std::function<bool(std::string_view)>& out) {
  while (!raw.empty() && state_ != State::kDone && !stopped_) {
    if (state_ == State::kData) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(left_, raw.size()));
      if (!out(raw.substr(0, n))) stopped_ = true;
      raw.remove_prefix(n);
      left_ -= n;
      if (left_ == 0) state_ = State::kDataEnd;
      continue;
    }
    // Size lines, the CRLF after data and trailer lines are read whole.
    auto nl = raw.find('\n');
    line_.append(raw.substr(0, nl));
    if (line_.size() > 4096) return Error::io("chunked response: line too long");
    if (nl == std::string_view::npos) return ok();
    raw.remove_prefix(nl + 1);
    if (!line_.empty() && line_.back() == '\r') line_.pop_back();
    std::string line = std::move(line_);
    line_.clear();
    if (state_ == State::kDataEnd) {
      if (!line.empty()) return Error::io("chunked response: no CRLF after a chunk");
      state_ = State::kSize;
    } else if (state_ == State::kSize) {
      line = line.substr(0, line.find(';'));
      if (line.empty() || line.size() > 15) return Error::io("chunked response: bad chunk size");
      uint64_t size = 0;
      for (char c : line) {
        int d = std::isdigit(static_cast<unsigned char>(c)) ? c - '0'
                : (c >= 'a' && c <= 'f')                    ? c - 'a' + 10
                : (c >= 'A' && c <= 'F')                    ? c - 'A' + 10
                                                            : -1;
        if (d < 0) return Error::io("chunked response: bad chunk size '" + line + "'");
        size = size * 16 + static_cast<uint64_t>(d);
      }
      left_ = size;
      state_ = size == 0 ? State::kTrailer : State::kData;
    } else if (state_ == State::kTrailer && line.empty()) {
      state_ = State::kDone;
    }
  }
  return ok();
}

Result<int> exchange_streaming(const std::string& host, uint16_t port, const http::Request& request,
                               int body_fd, uint64_t body_size, const StreamCallbacks& cb,
                               std::chrono::milliseconds silence) {
  auto dialled = dial(host, port, std::chrono::milliseconds(5000));
  if (!dialled) return dialled.error();
  Fd fd(*dialled);
  auto sent = send_request(fd.get(), host, port, request, body_fd, body_size, cb, silence);

  std::string raw;
  std::vector<char> buf(64 << 10);
  auto read_more = [&]() -> Result<size_t> {
    if (!wait_for(fd.get(), POLLIN, silence)) {
      return Error{"timeout", "read from " + endpoint(host, port) + ": timed out", ETIMEDOUT};
    }
    for (;;) {
      ssize_t n = ::recv(fd.get(), buf.data(), buf.size(), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Error::sys("read from " + endpoint(host, port), errno);
      return static_cast<size_t>(n);
    }
  };

  // Status line and headers.
  size_t header_end;
  while ((header_end = raw.find("\r\n\r\n")) == std::string::npos) {
    if (raw.size() > (64 << 10)) return Error::io("response headers too long");
    auto n = read_more();
    if (!n || *n == 0) {
      // Nothing came back: the send error (if any) is the better explanation.
      if (!sent) return sent.error();
      if (!n) return n.error();
      return Error::io("the scheduler at " + endpoint(host, port) +
                       " closed the connection without answering");
    }
    raw.append(buf.data(), *n);
  }
  std::string head = raw.substr(0, header_end);
  raw.erase(0, header_end + 4);
  int status = 0;
  if (head.rfind("HTTP/1.", 0) != 0 || head.size() < 12) {
    return Error::io("malformed response from " + endpoint(host, port));
  }
  status = std::atoi(head.c_str() + 9);
  http::Headers headers;
  size_t pos = head.find("\r\n");
  while (pos != std::string::npos) {
    size_t next = head.find("\r\n", pos + 2);
    std::string line =
        head.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2);
    if (auto colon = line.find(':'); colon != std::string::npos) {
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      headers.emplace_back(line.substr(0, colon), value);
    }
    pos = next;
  }
  if (cb.on_status) cb.on_status(status, headers);

  auto deliver = cb.on_data ? cb.on_data : [](std::string_view) { return true; };
  bool chunked = lower(std::string(http::find_header(headers, "Transfer-Encoding"))) == "chunked";
  std::string_view length_text = http::find_header(headers, "Content-Length");
  if (chunked) {
    ChunkDecoder decoder;
    std::string_view pending = raw;
    for (;;) {
      QF_TRY(decoder.feed(pending, deliver));
      if (decoder.done() || decoder.stopped()) return status;
      auto n = read_more();
      if (!n) return n.error();
      if (*n == 0) return Error::io("response from " + endpoint(host, port) + " ended early");
      pending = std::string_view(buf.data(), *n);
    }
  }
  bool bounded = !length_text.empty();
  uint64_t left = bounded ? std::strtoull(std::string(length_text).c_str(), nullptr, 10) : 0;
  std::string_view pending = raw;
  for (;;) {
    if (bounded && pending.size() > left) pending = pending.substr(0, left);
    if (!pending.empty() && !deliver(pending)) return status;
    if (bounded) {
      left -= pending.size();
      if (left == 0) return status;
    }
    auto n = read_more();
    if (!n) return n.error();
    if (*n == 0) {
      if (bounded) return Error::io("response from " + endpoint(host, port) + " ended early");
      return status;
    }
    pending = std::string_view(buf.data(), *n);
  }
}

}  // namespace qufop::cli
