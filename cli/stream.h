// A small blocking HTTP/1.1 exchange over a POSIX socket for the two things http::Client does
// not do: report upload progress while a large body is sent, and tell the status before the
// response body is streamed (a build log or a followed instance log must not be printed when the
// answer is a JSON error). One request per connection (Connection: close).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "common/http.h"
#include "common/result.h"

namespace qufop::cli {

struct StreamCallbacks {
  // After each piece of the request body is written: bytes sent so far, of total.
  std::function<void(uint64_t sent, uint64_t total)> on_progress;
  // Once the status line and headers are read.
  std::function<void(int status, const http::Headers& headers)> on_status;
  // Each piece of the (de-chunked) response body; return false to stop.
  std::function<bool(std::string_view)> on_data;
};

// Sends `request` (its headers, plus Host, Content-Length and Connection: close) with the body
// read from `body_fd` (`body_size` bytes from offset 0) when body_fd >= 0, else request.body.
// `silence` bounds each wait for the server. Returns the status. Transport errors have code
// "unavailable" (connect) or "io"/"timeout" (later), as http::Client's do.
Result<int> exchange_streaming(const std::string& host, uint16_t port, const http::Request& request,
                               int body_fd, uint64_t body_size, const StreamCallbacks& callbacks,
                               std::chrono::milliseconds silence);

// Decodes a chunked body incrementally (the response side of exchange_streaming).
class ChunkDecoder {
 public:
  // Feeds raw bytes; decoded data goes to `out`. Errors on malformed framing.
  Result<void> feed(std::string_view raw, const std::function<bool(std::string_view)>& out);
  bool done() const { return state_ == State::kDone; }
  bool stopped() const { return stopped_; }

 private:
  enum class State { kSize, kData, kDataEnd, kTrailer, kDone };
  State state_ = State::kSize;
  std::string line_;
  uint64_t left_ = 0;
  bool stopped_ = false;
};

}  // namespace qufop::cli
