#include "common/json.h"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/stream_parser.hpp>

namespace qufop::json {
namespace {

// Boost.JSON reports a byte offset; operators want line and column.
std::string position(std::string_view text, size_t offset) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(col);
}

}  // namespace

Result<Value> parse(std::string_view text) {
  boost::json::stream_parser p;
  boost::system::error_code ec;
  size_t used = p.write_some(text.data(), text.size(), ec);
  if (!ec) p.finish(ec);
  if (ec) return Error::invalid("malformed JSON at " + position(text, used) + ": " + ec.message());
  return p.release();
}

std::string serialize(const Value& v) { return boost::json::serialize(v); }

std::string error_body(std::string_view code, std::string_view message) {
  return serialize(Object{{"error", code}, {"message", message}});
}

Result<std::string> get_string(const Object& o, std::string_view field) {
  auto* v = o.if_contains(field);
  if (!v || !v->is_string()) {
    return Error::invalid("field '" + std::string(field) + "': expected a string");
  }
  return std::string(v->get_string());
}

Result<int64_t> get_int(const Object& o, std::string_view field) {
  auto* v = o.if_contains(field);
  if (v && v->is_int64()) return v->get_int64();
  if (v && v->is_uint64() && v->get_uint64() <= INT64_MAX) {
    return static_cast<int64_t>(v->get_uint64());
  }
  return Error::invalid("field '" + std::string(field) + "': expected an integer");
}

Result<bool> get_bool(const Object& o, std::string_view field) {
  auto* v = o.if_contains(field);
  if (!v || !v->is_bool()) {
    return Error::invalid("field '" + std::string(field) + "': expected true or false");
  }
  return v->get_bool();
}

Result<const Object*> get_object(const Value& v, std::string_view what) {
  if (!v.is_object()) return Error::invalid(std::string(what) + ": expected a JSON object");
  return &v.get_object();
}

}  // namespace qufop::json
