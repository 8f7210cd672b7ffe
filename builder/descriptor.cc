#include "builder/descriptor.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>

namespace qufop::builder {
namespace {

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool is_alnum(char c) { return is_lower_alnum(c) || (c >= 'A' && c <= 'Z'); }
bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// path-component := [a-z0-9]+ (([._]|__|-+) [a-z0-9]+)*
bool valid_path_component(std::string_view c) {
  if (c.empty() || !is_lower_alnum(c.front()) || !is_lower_alnum(c.back())) return false;
  for (size_t i = 0; i < c.size();) {
    if (is_lower_alnum(c[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < c.size() && !is_lower_alnum(c[j])) ++j;
    std::string_view sep = c.substr(i, j - i);
    bool ok = sep == "." || sep == "_" || sep == "__" ||
              std::all_of(sep.begin(), sep.end(), [](char ch) { return ch == '-'; });
    if (!ok) return false;
    i = j;
  }
  return true;
}

// host[:port], host := label(.label)*, label := alnum ([alnum-]* alnum)?
bool valid_domain(std::string_view d) {
  std::string_view host = d;
  if (auto colon = d.rfind(':'); colon != std::string_view::npos) {
    std::string_view port = d.substr(colon + 1);
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return false;
    }
    host = d.substr(0, colon);
  }
  if (host.empty()) return false;
  size_t start = 0;
  while (start <= host.size()) {
    size_t dot = host.find('.', start);
    std::string_view label =
        host.substr(start, dot == std::string_view::npos ? host.npos : dot - start);
    if (label.empty() || !is_alnum(label.front()) || !is_alnum(label.back())) return false;
    for (char c : label) {
      if (!is_alnum(c) && c != '-') return false;
    }
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return true;
}

bool valid_tag(std::string_view t) {
  if (t.empty() || t.size() > 128) return false;
  auto word = [](char c) { return is_alnum(c) || c == '_'; };
  if (!word(t.front())) return false;
  return std::all_of(t.begin(), t.end(), [&](char c) { return word(c) || c == '.' || c == '-'; });
}

std::string in_quotes(std::string_view s) { return "'" + std::string(s) + "'"; }

}  // namespace

std::string ImageRef::str() const {
  if (scratch) return "scratch";
  std::string s = name;
  if (!tag.empty()) s += ":" + tag;
  if (!digest.empty()) s += "@" + digest;
  return s;
}

Result<ImageRef> parse_image_ref(std::string_view text) {
  ImageRef ref;
  if (text == "scratch") {
    ref.scratch = true;
    return ref;
  }
  if (text.empty()) return Error::invalid("empty image reference");
  std::string_view rest = text;
  if (auto at = rest.find('@'); at != std::string_view::npos) {
    std::string_view digest = rest.substr(at + 1);
    rest = rest.substr(0, at);
    if (digest.size() != 71 || digest.substr(0, 7) != "sha256:" ||
        !std::all_of(digest.begin() + 7, digest.end(), is_hex)) {
      return Error::invalid("digest " + in_quotes(digest) +
                            " is not sha256:<64 lowercase hex digits>");
    }
    ref.digest = std::string(digest);
  }
  size_t last_slash = rest.rfind('/');
  size_t colon = rest.rfind(':');
  if (colon != std::string_view::npos &&
      (last_slash == std::string_view::npos || colon > last_slash)) {
    std::string_view tag = rest.substr(colon + 1);
    if (!valid_tag(tag)) {
      return Error::invalid("tag " + in_quotes(tag) +
                            " is not a tag (letters, digits, '_', '.', '-'; at most 128; not "
                            "starting with '.' or '-')");
    }
    ref.tag = std::string(tag);
    rest = rest.substr(0, colon);
  }
  if (rest.empty()) return Error::invalid("image reference " + in_quotes(text) + " has no name");
  if (rest.size() > 255) return Error::invalid("image name is longer than 255 characters");
  std::vector<std::string_view> parts;
  for (size_t start = 0;;) {
    size_t slash = rest.find('/', start);
    parts.push_back(
        rest.substr(start, slash == std::string_view::npos ? rest.npos : slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  size_t first = 0;
  if (parts.size() > 1 &&
      (parts[0].find_first_of(".:") != std::string_view::npos || parts[0] == "localhost")) {
    if (!valid_domain(parts[0])) {
      return Error::invalid("registry host " + in_quotes(parts[0]) + " is not HOST[:PORT]");
    }
    first = 1;
  }
  for (size_t i = first; i < parts.size(); ++i) {
    if (!valid_path_component(parts[i])) {
      return Error::invalid("image name " + in_quotes(rest) +
                            " is not a name (lowercase letters and digits, separated by '.', "
                            "'_', '__', '-' or '/')");
    }
  }
  ref.name = std::string(rest);
  if (ref.tag.empty() && ref.digest.empty()) ref.tag = "latest";
  return ref;
}

Result<std::vector<std::string>> split_command(std::string_view line) {
  std::vector<std::string> argv;
  std::string word;
  bool in_word = false;
  auto finish = [&] {
    if (in_word) argv.push_back(std::move(word));
    word.clear();
    in_word = false;
  };
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      finish();
    } else if (c == '\'') {
      size_t end = line.find('\'', i + 1);
      if (end == std::string_view::npos) return Error::invalid("unterminated ' quote");
      word.append(line.substr(i + 1, end - i - 1));
      in_word = true;
      i = end;
    } else if (c == '"') {
      in_word = true;
      size_t j = i + 1;
      for (; j < line.size() && line[j] != '"'; ++j) {
        if (line[j] == '\\' && j + 1 < line.size() &&
            std::string_view("$`\"\\\n").find(line[j + 1]) != std::string_view::npos) {
          if (line[j + 1] != '\n') word += line[j + 1];
          ++j;
        } else {
          word += line[j];
        }
      }
      if (j >= line.size()) return Error::invalid("unterminated \" quote");
      i = j;
    } else if (c == '\\') {
      if (i + 1 >= line.size()) return Error::invalid("a backslash ends the line");
      if (line[i + 1] != '\n') {
        word += line[i + 1];
        in_word = true;
      }
      ++i;
    } else if (std::string_view("|&;<>()`$").find(c) != std::string_view::npos ||
               (c == '#' && !in_word)) {
      return Error::invalid(std::string("unquoted '") + c +
                            "': the command is not run by a shell (quote it, or write "
                            "[\"/bin/sh\", \"-c\", \"...\"])");
    } else {
      word += c;
      in_word = true;
    }
  }
  finish();
  return argv;
}

Result<uint64_t> parse_size(std::string_view text) {
  size_t i = 0;
  uint64_t n = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    uint64_t d = text[i] - '0';
    if (n > (UINT64_MAX - d) / 10) return Error::invalid(in_quotes(text) + " is too large");
    n = n * 10 + d;
    ++i;
  }
  if (i == 0) return Error::invalid(in_quotes(text) + " is not a size (such as 64m, 1g)");
  std::string unit;
  for (char c : text.substr(i)) unit += static_cast<char>(std::tolower(c));
  static const std::map<std::string, int, std::less<>> kShift = {
      {"", 0},     {"b", 0},  {"k", 10},  {"kb", 10},  {"kib", 10}, {"m", 20},  {"mb", 20},
      {"mib", 20}, {"g", 30}, {"gb", 30}, {"gib", 30}, {"t", 40},   {"tb", 40}, {"tib", 40}};
  auto it = kShift.find(unit);
  if (it == kShift.end()) {
    return Error::invalid(in_quotes(text) + " is not a size (units: k, m, g, t; such as 64m)");
  }
  if (it->second > 0 && n > (UINT64_MAX >> it->second)) {
    return Error::invalid(in_quotes(text) + " is too large");
  }
  return n << it->second;
}

Result<std::chrono::milliseconds> parse_duration(std::string_view text) {
  auto bad = [&] {
    return Error::invalid(in_quotes(text) + " is not a duration (such as 10s, 500ms, 1m30s)");
  };
  if (text.empty()) return bad();
  double total_ms = 0;
  size_t i = 0;
  while (i < text.size()) {
    size_t start = i;
    while (i < text.size() && ((text[i] >= '0' && text[i] <= '9') || text[i] == '.')) ++i;
    std::string number(text.substr(start, i - start));
    if (number.empty() || std::count(number.begin(), number.end(), '.') > 1 ||
        number.front() == '.' || number.back() == '.') {
      return bad();
    }
    size_t ustart = i;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i]))) ++i;
    std::string_view unit = text.substr(ustart, i - ustart);
    double scale;
    if (unit == "ms") {
      scale = 1;
    } else if (unit == "s") {
      scale = 1000;
    } else if (unit == "m") {
      scale = 60'000;
    } else if (unit == "h") {
      scale = 3'600'000;
    } else {
      return bad();
    }
    total_ms += std::strtod(number.c_str(), nullptr) * scale;
    if (total_ms > 1e15) return Error::invalid(in_quotes(text) + " is too long");
  }
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(total_ms)));
}

std::string suggest(std::string_view word, const std::vector<std::string_view>& candidates) {
  // Optimal string alignment distance: insertions, deletions, substitutions, transpositions.
  auto distance = [](std::string_view a, std::string_view b) {
    std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
    for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
    for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
      for (size_t j = 1; j <= b.size(); ++j) {
        size_t cost = std::tolower(a[i - 1]) == std::tolower(b[j - 1]) ? 0 : 1;
        d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
        if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
          d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
        }
      }
    }
    return d[a.size()][b.size()];
  };
  std::string best;
  size_t best_d = 3;
  for (auto c : candidates) {
    size_t dist = distance(word, c);
    if (dist < best_d) {
      best_d = dist;
      best = std::string(c);
    }
  }
  return best;
}

namespace {

const std::vector<std::string_view>& known_keys() {
  static const std::vector<std::string_view> kKeys = {
      "image", "build_script", "run",       "env",    "port",    "health",
      "cpu",   "memory",       "stop_wait", "warmup", "readonly"};
  return kKeys;
}

std::string kind_of(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Scalar:
      return "a value";
    default:
      return "nothing";
  }
}

// Where errors point and how they read.
class Context {
 public:
  Context(std::string_view file, const YAML::Node& key_node, std::string key)
      : file_(file), key_line_(line_of(key_node)), key_(std::move(key)) {}

  static int line_of(const YAML::Node& n) {
    YAML::Mark m = n.Mark();
    return m.is_null() ? 0 : m.line + 1;
  }

  // An error about the value `at` (its line when it has one, else the key's).
  Error at(const YAML::Node& at, std::string_view message) const {
    int line = line_of(at);
    return make(line > 0 ? line : key_line_, message);
  }
  Error here(std::string_view message) const { return make(key_line_, message); }

 private:
  Error make(int line, std::string_view message) const {
    std::string where = std::string(file_);
    if (line > 0) where += ":" + std::to_string(line);
    return Error::invalid(where + ": key '" + key_ + "': " + std::string(message));
  }
  std::string_view file_;
  int key_line_;
  std::string key_;
};

Result<std::string> scalar(const Context& ctx, const YAML::Node& v, std::string_view expected) {
  if (!v.IsScalar()) return ctx.at(v, "expected " + std::string(expected) + ", got " + kind_of(v));
  return v.Scalar();
}

Result<std::string> nonempty_string(const Context& ctx, const YAML::Node& v) {
  auto s = scalar(ctx, v, "a string");
  if (!s) return s;
  if (s->empty()) return ctx.at(v, "must not be empty");
  if (s->find('\0') != std::string::npos) return ctx.at(v, "contains a NUL character");
  return s;
}

Result<std::vector<std::string>> string_list(const Context& ctx, const YAML::Node& v,
                                             std::string_view what) {
  if (!v.IsSequence()) {
    return ctx.at(v, "expected a list of " + std::string(what) + ", got " + kind_of(v));
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < v.size(); ++i) {
    const YAML::Node item = v[i];
    if (!item.IsScalar()) {
      return ctx.at(item,
                    "item " + std::to_string(i + 1) + ": expected a string, got " + kind_of(item));
    }
    if (item.Scalar().empty()) {
      return ctx.at(item, "item " + std::to_string(i + 1) + ": must not be empty");
    }
    if (item.Scalar().find('\0') != std::string::npos) {
      return ctx.at(item, "item " + std::to_string(i + 1) + ": contains a NUL character");
    }
    out.push_back(item.Scalar());
  }
  return out;
}

bool valid_env_name(std::string_view k) {
  if (k.empty() || (k[0] >= '0' && k[0] <= '9')) return false;
  return std::all_of(k.begin(), k.end(), [](char c) { return is_alnum(c) || c == '_'; });
}

Result<void> parse_env(const Context& ctx, const YAML::Node& v, Descriptor& d) {
  std::set<std::string> seen;
  auto add = [&](const YAML::Node& at, std::string k, std::string val) -> Result<void> {
    if (!valid_env_name(k)) {
      return ctx.at(at, in_quotes(k) + " is not a variable name (letters, digits, '_')");
    }
    if (k == "PORT") return ctx.at(at, "PORT is set from 'port'; set 'port' instead");
    if (val.find('\0') != std::string::npos) return ctx.at(at, k + ": contains a NUL character");
    if (!seen.insert(k).second) return ctx.at(at, k + " is set twice");
    d.env.emplace_back(std::move(k), std::move(val));
    return ok();
  };
  if (v.IsMap()) {
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (!it->first.IsScalar()) return ctx.at(it->first, "variable names must be strings");
      if (!it->second.IsScalar()) {
        return ctx.at(it->second, it->first.Scalar() + ": expected a string, got " +
                                      kind_of(it->second) + " (quote it; \"\" for empty)");
      }
      QF_TRY(add(it->first, it->first.Scalar(), it->second.Scalar()));
    }
    return ok();
  }
  if (v.IsSequence()) {
    for (size_t i = 0; i < v.size(); ++i) {
      const YAML::Node item = v[i];
      if (!item.IsScalar() || item.Scalar().find('=') == std::string::npos) {
        return ctx.at(item, "item " + std::to_string(i + 1) + ": expected K=V");
      }
      const std::string& s = item.Scalar();
      size_t eq = s.find('=');
      QF_TRY(add(item, s.substr(0, eq), s.substr(eq + 1)));
    }
    return ok();
  }
  return ctx.at(v, "expected a map of NAME: value or a list of NAME=value, got " + kind_of(v));
}

Result<void> parse_key(const Context& ctx, std::string_view key, const YAML::Node& v,
                       Descriptor& d) {
  if (key == "image") {
    auto s = nonempty_string(ctx, v);
    if (!s) return s.error();
    auto ref = parse_image_ref(*s);
    if (!ref) return ctx.at(v, ref.error().message);
    d.image = std::move(*ref);
  } else if (key == "build_script") {
    auto list = string_list(ctx, v, "shell commands");
    if (!list) return list.error();
    d.build_script = std::move(*list);
  } else if (key == "run") {
    if (v.IsSequence()) {
      auto list = string_list(ctx, v, "arguments");
      if (!list) return list.error();
      d.run = std::move(*list);
    } else {
      auto s = nonempty_string(ctx, v);
      if (!s) return s.error();
      auto argv = split_command(*s);
      if (!argv) return ctx.at(v, argv.error().message);
      d.run = std::move(*argv);
    }
    if (d.run.empty()) return ctx.at(v, "the command is empty");
  } else if (key == "env") {
    return parse_env(ctx, v, d);
  } else if (key == "port") {
    auto s = scalar(ctx, v, "a port number");
    if (!s) return s.error();
    char* end = nullptr;
    errno = 0;
    long long n = std::strtoll(s->c_str(), &end, 10);
    if (s->empty() || *end != '\0' || errno != 0 || n < 1 || n > 65535) {
      return ctx.at(v, *s + " is not a port (1-65535)");
    }
    d.port = static_cast<int>(n);
  } else if (key == "health") {
    auto s = nonempty_string(ctx, v);
    if (!s) return s.error();
    if (s->front() != '/') return ctx.at(v, in_quotes(*s) + " is not a path (start it with /)");
    if (s->size() > 1024) return ctx.at(v, "the path is longer than 1024 characters");
    for (char c : *s) {
      if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
        return ctx.at(v, in_quotes(*s) + " has blanks or control characters (percent-encode them)");
      }
    }
    d.health = *s;
  } else if (key == "cpu") {
    auto s = scalar(ctx, v, "a number of cpus");
    if (!s) return s.error();
    char* end = nullptr;
    double x = std::strtod(s->c_str(), &end);
    bool numeric =
        !s->empty() && *end == '\0' && s->find_first_not_of("0123456789.") == std::string::npos;
    if (!numeric || !std::isfinite(x) || x <= 0 || x > kMaxCpu) {
      return ctx.at(v, *s + " is not a cpu count (more than 0, at most 64; such as 0.5)");
    }
    d.cpu = x;
  } else if (key == "memory") {
    auto s = scalar(ctx, v, "a size");
    if (!s) return s.error();
    auto n = parse_size(*s);
    if (!n) return ctx.at(v, n.error().message);
    if (*n < kMinMemory) return ctx.at(v, *s + " is less than the minimum, 4m");
    if (*n > kMaxMemory) return ctx.at(v, *s + " is more than the maximum, 1t");
    d.memory = *n;
  } else if (key == "stop_wait" || key == "warmup") {
    auto s = scalar(ctx, v, "a duration");
    if (!s) return s.error();
    auto t = parse_duration(*s);
    if (!t) return ctx.at(v, t.error().message);
    if (key == "stop_wait") {
      if (*t > kMaxStopWait) return ctx.at(v, *s + " is longer than the maximum, 10m");
      d.stop_wait = *t;
    } else {
      if (*t > kMaxWarmup) return ctx.at(v, *s + " is longer than the maximum, 1h");
      d.warmup = *t;
    }
  } else if (key == "readonly") {
    auto s = scalar(ctx, v, "true or false");
    if (!s) return s.error();
    if (*s == "true" || *s == "True" || *s == "TRUE") {
      d.readonly = true;
    } else if (*s == "false" || *s == "False" || *s == "FALSE") {
      d.readonly = false;
    } else {
      return ctx.at(v, *s + " is not true or false");
    }
  }
  return ok();
}

Result<Descriptor> parse_top(const YAML::Node& root, std::string_view file) {
  std::string where(file);
  if (!root.IsDefined() || root.IsNull()) {
    return Error::invalid(where + ": empty descriptor (it needs at least 'image' and 'run')");
  }
  if (!root.IsMap()) {
    int line = Context::line_of(root);
    return Error::invalid(where + (line > 0 ? ":" + std::to_string(line) : "") +
                          ": expected a map of keys at the top level, got " + kind_of(root));
  }
  Descriptor d;
  std::map<std::string, int> seen;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const YAML::Node key_node = it->first;
    int line = Context::line_of(key_node);
    std::string at = where + (line > 0 ? ":" + std::to_string(line) : "");
    if (!key_node.IsScalar()) {
      return Error::invalid(at + ": keys must be plain names, got " + kind_of(key_node));
    }
    const std::string key = key_node.Scalar();
    Context ctx(file, key_node, key);
    if (std::find(known_keys().begin(), known_keys().end(), key) == known_keys().end()) {
      std::string hint = suggest(key, known_keys());
      return ctx.here(hint.empty() ? "unknown key" : "unknown key (did you mean '" + hint + "'?)");
    }
    if (auto [prev, fresh] = seen.emplace(key, line); !fresh) {
      return ctx.here("set twice (first on line " + std::to_string(prev->second) + ")");
    }
    if (it->second.IsNull()) return ctx.at(key_node, "has no value");
    QF_TRY(parse_key(ctx, key, it->second, d));
  }
  for (std::string_view required : {"image", "run"}) {
    if (!seen.count(std::string(required))) {
      return Error::invalid(where + ": key '" + std::string(required) + "' is missing (" +
                            (required == "image" ? "the base image, or scratch"
                                                 : "the command that starts the UFOP") +
                            ")");
    }
  }
  if (d.image.scratch && !d.build_script.empty()) {
    return Error::invalid(where + ":" + std::to_string(seen["build_script"]) +
                          ": key 'build_script': the scratch image has no /bin/sh to run it "
                          "(use a base image such as busybox, or drop build_script)");
  }
  return d;
}

}  // namespace

Result<Descriptor> parse_descriptor(std::string_view text, std::string_view file) {
  std::string where(file);
  if (text.size() > kMaxDescriptorBytes) {
    return Error::invalid(where + ": larger than " + std::to_string(kMaxDescriptorBytes) +
                          " bytes");
  }
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(std::string(text));
  } catch (const YAML::Exception& e) {
    std::string at = where;
    if (!e.mark.is_null()) at += ":" + std::to_string(e.mark.line + 1);
    return Error::invalid(at + ": malformed YAML: " + e.msg);
  } catch (const std::exception& e) {
    return Error::invalid(where + ": malformed YAML: " + e.what());
  }
  if (docs.size() > 1) {
    int line = Context::line_of(docs[1]);
    return Error::invalid(where + (line > 0 ? ":" + std::to_string(line) : "") +
                          ": more than one YAML document (remove the second '---')");
  }
  try {
    return parse_top(docs.empty() ? YAML::Node() : docs[0], file);
  } catch (const YAML::Exception& e) {  // not expected: every access above is type-checked
    return Error::invalid(where + ": " + e.what());
  }
}

Result<Descriptor> load_descriptor(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error::sys("open(" + path.string() + ")", errno ? errno : ENOENT);
  std::string text;
  text.resize(kMaxDescriptorBytes + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (in.bad()) return Error::io("read(" + path.string() + ") failed");
  return parse_descriptor(text, path.filename().string());
}

}  // namespace qufop::builder
