// A small HTTP/1.1 head scanner for the gate's fast path: the request and response heads of the
// common case (keep-alive, Content-Length or no body) are read in place, without allocating,
// and copied through with only the request line and the hop-by-hop fields changed. Anything it
// does not fully understand is kOther: the caller hands the bytes to the full (Beast) parser,
// which then decides (and gives the precise 400/413/431).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace qufop::gate::scan {

struct Header {
  std::string_view name;
  std::string_view value;  // without surrounding whitespace
};

constexpr size_t kMaxHeaders = 64;

enum class Status {
  kIncomplete,  // no blank line yet
  kComplete,
  kOther,  // valid or not, not for the fast path
};

// Fields every head carries; `headers` lists them all in order.
struct Head {
  size_t head_bytes = 0;  // through the blank line
  bool has_content_length = false;
  uint64_t content_length = 0;
  bool close = false;       // a "close" token in Connection
  bool keep_alive = false;  // a "keep-alive" token in Connection
  size_t header_count = 0;
  std::array<Header, kMaxHeaders> headers;
};

// HTTP/1.1 requests with a GET or POST method and an origin-form target; no Transfer-Encoding
// or Expect (those are kOther). Upgrade and TE are hop-by-hop: dropped like Connection.
struct Request : Head {
  std::string_view method;
  std::string_view target;
  std::string_view authorization;
  std::string_view host;
  std::string_view content_type;
};

// HTTP/1.1 responses with a status of 200..599 and no Transfer-Encoding.
struct Response : Head {
  int status = 0;
  std::string_view reason;
};

Status scan_request(std::string_view in, Request& out);
Status scan_response(std::string_view in, Response& out);

// Connection, Keep-Alive, Proxy-Connection, Upgrade, TE: fields for one hop only.
bool is_hop_by_hop(std::string_view name);
bool iequals(std::string_view a, std::string_view b);

// Appends "Name: value\r\n".
void append_header(std::string& out, const Header& h);

}  // namespace qufop::gate::scan
