// Flags and config files, one mechanism: a config file holds `key = value` lines whose keys are
// the long flag names, so `--config FILE` supplies defaults and the command line overrides them.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace qufop {

struct FlagSpec {
  std::string name;        // long name without dashes: "data-dir"
  std::string value_name;  // shown in --help ("DIR"); empty for a boolean switch
  std::string help;
  std::string default_value;
  bool repeatable = false;  // may be given many times; get_all() returns each value
};

class Flags {
 public:
  Flags(std::string program, std::string summary, std::vector<FlagSpec> specs);

  // Parses argv[1..]. `--help`/`-h` stops parsing and sets help_requested(). When a "config"
  // flag is declared and given, the file is read first and the command line overrides it.
  Result<void> parse(int argc, const char* const* argv);
  Result<void> parse(const std::vector<std::string>& args);

  bool help_requested() const { return help_requested_; }
  std::string usage() const;
  const std::string& program() const { return program_; }

  // The flag's value (last one given), or its default. Asking for an undeclared flag aborts.
  const std::string& get(std::string_view name) const;
  std::vector<std::string> get_all(std::string_view name) const;
  bool given(std::string_view name) const;
  Result<int64_t> get_int(std::string_view name, int64_t min, int64_t max) const;
  bool get_bool(std::string_view name) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  const FlagSpec* find(std::string_view name) const;
  Result<void> set(const FlagSpec& spec, std::string value, std::string_view origin);
  Result<void> load_config(const std::string& path);

  std::string program_;
  std::string summary_;
  std::vector<FlagSpec> specs_;
  std::map<std::string, std::vector<std::string>, std::less<>> values_;
  std::vector<std::string> positional_;
  bool help_requested_ = false;
};

// `key = value` lines; '#' starts a comment; values may be double-quoted. Errors name
// "source:line". Keys keep their order of first appearance irrelevant: the last one wins.
Result<std::map<std::string, std::string>> parse_config_text(std::string_view text,
                                                             std::string_view source);

struct HostPort {
  std::string host;
  uint16_t port = 0;
  std::string str() const;
};
// "127.0.0.1:7100", "[::1]:7100", "localhost:80", ":7100" (all interfaces). Port 0 is allowed
// (an ephemeral port) only when allow_zero is set.
Result<HostPort> parse_host_port(std::string_view text, bool allow_zero = true);

// "10s", "250ms", "2m", "1h", or a bare number of seconds.
Result<int64_t> parse_duration_ms(std::string_view text);

// "64m", "1g", "512k", "1024" (bytes). Rejects negatives and overflow.
Result<uint64_t> parse_bytes(std::string_view text);

}  // namespace qufop
