#include "gate/http_scan.h"

#include <cstring>
#include <type_traits>

namespace qufop::gate::scan {

namespace {

// RFC 9110 tchar.
bool is_tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

// Field values: visible characters, obs-text, space and tab.
bool is_value_char(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

// Target characters: visible ASCII only (no space, no controls, no obs-text).
bool is_target_char(unsigned char c) { return c > 0x20 && c < 0x7f; }

std::string_view trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

bool parse_length(std::string_view v, uint64_t& out) {
  if (v.empty() || v.size() > 18) return false;
  uint64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  out = n;
  return true;
}

// The tokens of a Connection value.
void connection_tokens(std::string_view v, Head& h) {
  while (!v.empty()) {
    size_t comma = v.find(',');
    auto token = trim(v.substr(0, comma));
    if (iequals(token, "close")) h.close = true;
    if (iequals(token, "keep-alive")) h.keep_alive = true;
    if (comma == std::string_view::npos) break;
    v.remove_prefix(comma + 1);
  }
}

enum class Field { kOther, kLength, kConnection, kRefuse, kAuthorization, kHost, kContentType };

Field classify(std::string_view name) {
  switch (name.size()) {
    case 4:
      return iequals(name, "host") ? Field::kHost : Field::kOther;
    case 6:
      return iequals(name, "expect") ? Field::kRefuse : Field::kOther;
    case 10:
      return iequals(name, "connection") ? Field::kConnection : Field::kOther;
    case 12:
      return iequals(name, "content-type") ? Field::kContentType : Field::kOther;
    case 13:
      return iequals(name, "authorization") ? Field::kAuthorization : Field::kOther;
    case 14:
      return iequals(name, "content-length") ? Field::kLength : Field::kOther;
    case 17:
      return iequals(name, "transfer-encoding") ? Field::kRefuse : Field::kOther;
    default:
      return Field::kOther;
  }
}

// The header lines of `block` (each ending in CRLF, the blank line excluded). A request refuses
// Expect and Transfer-Encoding, a response Transfer-Encoding.
template <typename H>
Status scan_fields(std::string_view block, H& h, bool request) {
  while (!block.empty()) {
    size_t eol = block.find("\r\n");
    if (eol == std::string_view::npos) return Status::kOther;
    std::string_view line = block.substr(0, eol);
    block.remove_prefix(eol + 2);
    size_t colon = line.find(':');
    if (colon == 0 || colon == std::string_view::npos) return Status::kOther;
    std::string_view name = line.substr(0, colon);
    for (unsigned char c : name) {
      if (!is_tchar(c)) return Status::kOther;  // obs-fold and bad names alike
    }
    std::string_view raw = line.substr(colon + 1);
    for (unsigned char c : raw) {
      if (!is_value_char(c)) return Status::kOther;
    }
    std::string_view value = trim(raw);
    if (h.header_count == kMaxHeaders) return Status::kOther;
    h.headers[h.header_count++] = Header{name, value};
    switch (classify(name)) {
      case Field::kLength:
        if (h.has_content_length || !parse_length(value, h.content_length)) return Status::kOther;
        h.has_content_length = true;
        break;
      case Field::kConnection:
        connection_tokens(value, h);
        break;
      case Field::kRefuse:
        if (request || iequals(name, "transfer-encoding")) return Status::kOther;
        break;
      case Field::kAuthorization:
        if constexpr (std::is_same_v<H, Request>) {
          if (!h.authorization.empty()) return Status::kOther;
          h.authorization = value;
        }
        break;
      case Field::kHost:
        if constexpr (std::is_same_v<H, Request>) {
          if (!h.host.empty()) return Status::kOther;
          h.host = value;
        }
        break;
      case Field::kContentType:
        if constexpr (std::is_same_v<H, Request>) h.content_type = value;
        break;
      case Field::kOther:
        break;
    }
  }
  return Status::kComplete;
}

// The head through the blank line, or kIncomplete; bare LFs make it the full parser's business.
Status find_head(std::string_view in, size_t& head_bytes) {
  if (in.size() < 4) return Status::kIncomplete;  // (and memmem must not see a null buffer)
  const void* end = memmem(in.data(), in.size(), "\r\n\r\n", 4);
  if (!end) return memmem(in.data(), in.size(), "\n\n", 2) ? Status::kOther : Status::kIncomplete;
  head_bytes = static_cast<size_t>(static_cast<const char*>(end) - in.data()) + 4;
  return Status::kComplete;
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    unsigned char x = static_cast<unsigned char>(a[i]);
    unsigned char y = static_cast<unsigned char>(b[i]);
    if (x >= 'A' && x <= 'Z') x = static_cast<unsigned char>(x + 32);
    if (y >= 'A' && y <= 'Z') y = static_cast<unsigned char>(y + 32);
    if (x != y) return false;
  }
  return true;
}

bool is_hop_by_hop(std::string_view name) {
  return iequals(name, "connection") || iequals(name, "keep-alive") ||
         iequals(name, "proxy-connection") || iequals(name, "upgrade") || iequals(name, "te");
}

void append_header(std::string& out, const Header& h) {
  out.append(h.name);
  out.append(": ");
  out.append(h.value);
  out.append("\r\n");
}

Status scan_request(std::string_view in, Request& out) {
  out = Request{};
  size_t head_bytes = 0;
  if (auto s = find_head(in, head_bytes); s != Status::kComplete) return s;
  std::string_view head = in.substr(0, head_bytes - 2);  // each line keeps its CRLF
  size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return Status::kOther;
  out.method = line.substr(0, sp1);
  if (out.method != "GET" && out.method != "POST") return Status::kOther;
  size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return Status::kOther;
  out.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (out.target.empty() || out.target[0] != '/') return Status::kOther;
  for (unsigned char c : out.target) {
    if (!is_target_char(c)) return Status::kOther;
  }
  if (line.substr(sp2 + 1) != "HTTP/1.1") return Status::kOther;
  if (auto s = scan_fields(head.substr(eol + 2), out, true); s != Status::kComplete) return s;
  out.head_bytes = head_bytes;
  return Status::kComplete;
}

Status scan_response(std::string_view in, Response& out) {
  out = Response{};
  size_t head_bytes = 0;
  if (auto s = find_head(in, head_bytes); s != Status::kComplete) return s;
  std::string_view head = in.substr(0, head_bytes - 2);
  size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  // "HTTP/1.1 200 OK": a three-digit status and a reason.
  if (line.size() < 14 || line.substr(0, 9) != "HTTP/1.1 " || line[12] != ' ') {
    return Status::kOther;
  }
  int status = 0;
  for (size_t i = 9; i < 12; ++i) {
    if (line[i] < '0' || line[i] > '9') return Status::kOther;
    status = status * 10 + (line[i] - '0');
  }
  if (status < 200 || status > 599) return Status::kOther;  // 1xx: interim, the full parser's
  out.status = status;
  out.reason = line.substr(13);
  for (unsigned char c : out.reason) {
    if (!is_value_char(c)) return Status::kOther;
  }
  if (auto s = scan_fields(head.substr(eol + 2), out, false); s != Status::kComplete) return s;
  out.head_bytes = head_bytes;
  return Status::kComplete;
}

}  // namespace qufop::gate::scan
