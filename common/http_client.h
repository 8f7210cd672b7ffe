// A blocking HTTP/1.1 client with keep-alive and timeouts, for the CLI and daemon-to-daemon calls.
// One connection per Client; not thread-safe (use one Client per thread).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "common/http.h"
#include "common/result.h"

namespace qufop::http {

struct ClientOptions {
  std::chrono::milliseconds connect_timeout{5'000};
  std::chrono::milliseconds request_timeout{30'000};
  size_t max_body_bytes = 256u << 20;
};

// Ends a Client::stream() from another thread: cancel() shuts the stream's socket down, so its
// wait for the request to go out or the response to come in ends at once and stream() fails
// with code "cancelled"; a stream started after cancel() fails at once; a cancel() after the stream
// ended does nothing. A connect in progress is not interrupted (connect_timeout bounds it). It
// stays cancelled: one StreamCancel may serve several streams in turn, never two at once, and must
// outlive the stream() calls given it. cancel() and cancelled() are thread-safe.
class StreamCancel {
 public:
  void cancel();
  bool cancelled() const;

 private:
  friend class Client;
  class Scope;
  // The stream registers its socket while it is open; cancel() shuts it down under mu_, so it
  // never touches an fd that was closed (and perhaps reused) meanwhile.
  bool attach(int fd);  // false when already cancelled
  void detach();

  mutable std::mutex mu_;
  bool cancelled_ = false;
  int fd_ = -1;
};

class Client {
 public:
  Client(std::string host, uint16_t port, ClientOptions options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends method/target/headers/body of `request` (path and query are ignored: target is used).
  // A reused keep-alive connection that the server closed meanwhile is reconnected once.
  Result<Response> send(const Request& request);
  Result<Response> get(std::string_view target);
  Result<Response> post(std::string_view target, std::string body,
                        std::string content_type = "application/json");

  // Sends the request and hands each piece of the response body to on_data as it arrives
  // (chunked or not); on_data returns false to stop early. Returns the status code. `timeout`
  // bounds silence: each wait for the next piece (a watch may last for hours), not the whole.
  // `cancel`, when given, lets another thread end the stream (see StreamCancel).
  Result<int> stream(const Request& request, const std::function<bool(std::string_view)>& on_data,
                     std::chrono::milliseconds timeout, StreamCancel* cancel = nullptr);
  // The same, with the status and headers handed to on_head before the first piece of body
  // (a proxy answers with them); on_head returns false to stop before reading the body.
  Result<int> stream(const Request& request,
                     const std::function<bool(int status, const Headers& headers)>& on_head,
                     const std::function<bool(std::string_view)>& on_data,
                     std::chrono::milliseconds timeout, StreamCancel* cancel = nullptr);

  std::string endpoint() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qufop::http
