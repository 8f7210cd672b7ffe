// JSON via Boost.JSON. This header pulls in only boost/json/value.hpp (not the parser).
#pragma once

#include <boost/json/value.hpp>
#include <string>
#include <string_view>

#include "common/result.h"

namespace qufop::json {

using Value = boost::json::value;
using Object = boost::json::object;
using Array = boost::json::array;

// Parses text; the error says where ("line 3, column 7: syntax error").
Result<Value> parse(std::string_view text);
std::string serialize(const Value& v);

// {"error": code, "message": message}
std::string error_body(std::string_view code, std::string_view message);

// Typed field access with errors that name the field: "field 'count': expected an integer".
Result<std::string> get_string(const Object& o, std::string_view field);
Result<int64_t> get_int(const Object& o, std::string_view field);
Result<bool> get_bool(const Object& o, std::string_view field);
Result<const Object*> get_object(const Value& v, std::string_view what);

}  // namespace qufop::json
