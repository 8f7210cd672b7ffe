// qufopctl's argument parser: long flags with optional one-letter aliases (`-m 2`, `--mode 2`,
// `--mode=2`), boolean switches and a bounded number of positional arguments. common/config.h's
// Flags has no short aliases, which every qufopctl command uses.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace qufop::cli {

struct Option {
  std::string name;        // long name without dashes: "mode"
  char short_name = 0;     // 'm', or 0 for none
  std::string value_name;  // "MODE"; empty for a boolean switch
  std::string help;
};

class Args {
 public:
  // `synopsis` follows the command name in the usage line: "NAME -m MODE [--desc TEXT]".
  Args(std::string command, std::string synopsis, std::string summary, std::vector<Option> options,
       size_t min_positional, size_t max_positional);

  // Errors are one line naming the bad argument. `-h`/`--help` stops parsing and sets help().
  Result<void> parse(const std::vector<std::string>& args);

  bool help() const { return help_; }
  std::string usage() const;
  const std::string& command() const { return command_; }

  bool has(std::string_view name) const;
  // The value given last, or "" when absent. Asking for an undeclared option aborts.
  const std::string& get(std::string_view name) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  const Option* find_long(std::string_view name) const;
  const Option* find_short(char c) const;

  std::string command_, synopsis_, summary_;
  std::vector<Option> options_;
  size_t min_positional_, max_positional_;
  std::map<std::string, std::string, std::less<>> values_;
  std::vector<std::string> positional_;
  bool help_ = false;
};

}  // namespace qufop::cli
