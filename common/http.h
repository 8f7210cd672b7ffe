// Plain HTTP request/response values shared by the server, the client and handlers. Beast stays
// out of this header so that handlers compile fast.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace qufop::http {

using Headers = std::vector<std::pair<std::string, std::string>>;

// Case-insensitive header lookup; empty when absent.
std::string_view find_header(const Headers& headers, std::string_view name);
// Appends "name: value\r\n" to a head being written by hand; false (nothing appended) when the
// name holds CR, LF or ':' or the value CR or LF, which would split the head.
bool append_header_line(std::string& head, std::string_view name, std::string_view value);

struct Request {
  std::string method;  // "GET"
  std::string target;  // "/v1/x?y=1" as received
  std::string path;    // "/v1/x" (not decoded)
  std::string query;   // "y=1" (without '?')
  Headers headers;
  std::string body;
  std::string remote;  // "127.0.0.1:5555"

  std::string_view header(std::string_view name) const { return find_header(headers, name); }
  // The decoded value of a query parameter, or empty.
  std::string query_param(std::string_view name) const;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  Headers headers;
  std::string body;

  std::string_view header(std::string_view name) const { return find_header(headers, name); }

  // {"error": code, "message": message} with the given status.
  static Response error(int status, std::string_view code, std::string_view message);
  static Response text(int status, std::string body,
                       std::string content_type = "text/plain; charset=utf-8");
};

// Splits "/a/b?x=1" into path and query.
std::pair<std::string, std::string> split_target(std::string_view target);
std::string url_decode(std::string_view s);
std::string url_encode(std::string_view s);

}  // namespace qufop::http
