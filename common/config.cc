#include "common/config.h"

#include <charconv>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>

namespace qufop {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

bool valid_key(std::string_view key) {
  if (key.empty()) return false;
  for (char c : key) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) return false;
  }
  return true;
}

Result<std::string> unquote(std::string_view value, std::string_view where) {
  if (value.size() < 2 || value.front() != '"') return std::string(value);
  if (value.back() != '"') return Error::invalid(std::string(where) + ": unterminated quote");
  return std::string(value.substr(1, value.size() - 2));
}

template <class Int>
Result<Int> parse_integer(std::string_view text, std::string_view what) {
  Int v{};
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size() || text.empty()) {
    return Error::invalid(std::string(what) + ": '" + std::string(text) + "' is not a number");
  }
  return v;
}

}  // namespace

Result<std::map<std::string, std::string>> parse_config_text(std::string_view text,
                                                             std::string_view source) {
  std::map<std::string, std::string> out;
  int line_no = 0;
  while (!text.empty()) {
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++line_no;
    std::string where = std::string(source) + ":" + std::to_string(line_no);
    if (auto hash = line.find('#'); hash != std::string_view::npos &&
                                    line.substr(0, hash).find('"') == std::string_view::npos) {
      line = line.substr(0, hash);
    }
    line = trim(line);
    if (line.empty()) continue;
    auto eq = line.find('=');
    if (eq == std::string_view::npos) {
      return Error::invalid(where + ": expected 'key = value', got '" + std::string(line) + "'");
    }
    std::string_view key = trim(line.substr(0, eq));
    if (!valid_key(key)) {
      return Error::invalid(where + ": bad key '" + std::string(key) +
                            "' (lowercase letters, digits, '-')");
    }
    auto value = unquote(trim(line.substr(eq + 1)), where);
    if (!value) return value.error();
    out[std::string(key)] = std::move(*value);
  }
  return out;
}

Flags::Flags(std::string program, std::string summary, std::vector<FlagSpec> specs)
    : program_(std::move(program)), summary_(std::move(summary)), specs_(std::move(specs)) {}

const FlagSpec* Flags::find(std::string_view name) const {
  for (const auto& s : specs_) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

Result<void> Flags::set(const FlagSpec& spec, std::string value, std::string_view origin) {
  auto& slot = values_[spec.name];
  if (!spec.repeatable) slot.clear();
  slot.push_back(std::move(value));
  (void)origin;
  return ok();
}

Result<void> Flags::load_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Error::sys("open config " + path, errno);
  std::stringstream buf;
  buf << in.rdbuf();
  auto entries = parse_config_text(buf.str(), path);
  if (!entries) return entries.error();
  for (auto& [key, value] : *entries) {
    const FlagSpec* spec = find(key);
    if (!spec || key == "config" || key == "help") {
      return Error::invalid(path + ": unknown key '" + key + "' (see --help for the keys)");
    }
    QF_TRY(set(*spec, value, path));
  }
  return ok();
}

Result<void> Flags::parse(int argc, const char* const* argv) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return parse(args);
}

Result<void> Flags::parse(const std::vector<std::string>& args) {
  // Two passes so that the config file is read first whatever its position on the line.
  struct Given {
    const FlagSpec* spec;
    std::string value;
  };
  std::vector<Given> given;
  bool only_positional = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (only_positional || arg.size() < 2 || arg[0] != '-' || arg == "-") {
      positional_.push_back(arg);
      continue;
    }
    if (arg == "--") {
      only_positional = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      help_requested_ = true;
      return ok();
    }
    if (arg.rfind("--", 0) != 0) {
      return Error::invalid("unknown flag '" + arg + "' (see --help)");
    }
    std::string name = arg.substr(2);
    std::optional<std::string> inline_value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name.resize(eq);
    }
    const FlagSpec* spec = find(name);
    if (!spec) return Error::invalid("unknown flag '--" + name + "' (see --help)");
    std::string value;
    if (spec->value_name.empty()) {
      if (inline_value && *inline_value != "true" && *inline_value != "false") {
        return Error::invalid("flag '--" + name + "' takes no value");
      }
      value = inline_value.value_or("true");
    } else if (inline_value) {
      value = *inline_value;
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return Error::invalid("flag '--" + name + "' needs a value " + spec->value_name);
    }
    given.push_back({spec, std::move(value)});
  }
  for (const auto& g : given) {
    if (g.spec->name == "config") QF_TRY(load_config(g.value));
  }
  for (auto& g : given) QF_TRY(set(*g.spec, std::move(g.value), "command line"));
  return ok();
}

const std::string& Flags::get(std::string_view name) const {
  const FlagSpec* spec = find(name);
  if (!spec) std::abort();  // invariant: code asks only for flags it declared
  auto it = values_.find(name);
  if (it == values_.end() || it->second.empty()) return spec->default_value;
  return it->second.back();
}

std::vector<std::string> Flags::get_all(std::string_view name) const {
  if (!find(name)) std::abort();
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

bool Flags::given(std::string_view name) const { return values_.count(name) > 0; }

Result<int64_t> Flags::get_int(std::string_view name, int64_t min, int64_t max) const {
  auto v = parse_integer<int64_t>(get(name), "--" + std::string(name));
  if (!v) return v.error();
  if (*v < min || *v > max) {
    return Error::invalid("--" + std::string(name) + ": " + std::to_string(*v) +
                          " is out of range [" + std::to_string(min) + ", " + std::to_string(max) +
                          "]");
  }
  return v;
}

bool Flags::get_bool(std::string_view name) const { return get(name) == "true"; }

std::string Flags::usage() const {
  std::string out = "usage: " + program_ + " [flags]\n" + summary_ + "\n\nflags:\n";
  for (const auto& s : specs_) {
    std::string left = "  --" + s.name + (s.value_name.empty() ? "" : " " + s.value_name);
    if (left.size() < 28) left.resize(28, ' ');
    out += left + " " + s.help;
    if (!s.default_value.empty() && !s.value_name.empty()) {
      out += " (default " + s.default_value + ")";
    }
    if (s.repeatable) out += " (repeatable)";
    out += "\n";
  }
  out += "  --help                     show this help\n";
  return out;
}

std::string HostPort::str() const {
  bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

Result<HostPort> parse_host_port(std::string_view text, bool allow_zero) {
  auto bad = [&](std::string why) {
    return Error::invalid("address '" + std::string(text) + "': " + why);
  };
  std::string_view host, port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return bad("expected [IPv6]:PORT");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad("expected HOST:PORT");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return bad("put an IPv6 address in brackets");
  }
  auto p = parse_integer<uint32_t>(port, "port");
  if (!p || *p > 65535) return bad("port must be 0-65535");
  if (*p == 0 && !allow_zero) return bad("port 0 is not allowed here");
  return HostPort{host.empty() ? "0.0.0.0" : std::string(host), static_cast<uint16_t>(*p)};
}

Result<int64_t> parse_duration_ms(std::string_view text) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  auto n = parse_integer<int64_t>(text.substr(0, digits), "duration");
  if (!n) return Error::invalid("duration '" + std::string(text) + "': expected e.g. 10s, 250ms");
  std::string_view unit = text.substr(digits);
  int64_t mult = 0;
  if (unit.empty() || unit == "s")
    mult = 1000;
  else if (unit == "ms")
    mult = 1;
  else if (unit == "m")
    mult = 60'000;
  else if (unit == "h")
    mult = 3'600'000;
  else
    return Error::invalid("duration '" + std::string(text) + "': unit must be ms, s, m or h");
  if (*n > std::numeric_limits<int64_t>::max() / mult) {
    return Error::invalid("duration '" + std::string(text) + "' is too large");
  }
  return *n * mult;
}

Result<uint64_t> parse_bytes(std::string_view text) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  auto n = parse_integer<uint64_t>(text.substr(0, digits), "size");
  if (!n) return Error::invalid("size '" + std::string(text) + "': expected e.g. 64m, 1g, 4096");
  std::string_view unit = text.substr(digits);
  uint64_t mult = 0;
  if (unit.empty() || unit == "b" || unit == "B")
    mult = 1;
  else if (unit == "k" || unit == "K" || unit == "KiB")
    mult = 1ull << 10;
  else if (unit == "m" || unit == "M" || unit == "MiB")
    mult = 1ull << 20;
  else if (unit == "g" || unit == "G" || unit == "GiB")
    mult = 1ull << 30;
  else
    return Error::invalid("size '" + std::string(text) + "': unit must be k, m or g");
  if (*n > std::numeric_limits<uint64_t>::max() / mult) {
    return Error::invalid("size '" + std::string(text) + "' is too large");
  }
  return *n * mult;
}

}  // namespace qufop
