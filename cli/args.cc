#include "cli/args.h"

#include <cstdlib>

namespace qufop::cli {

Args::Args(std::string command, std::string synopsis, std::string summary,
           std::vector<Option> options, size_t min_positional, size_t max_positional)
    : command_(std::move(command)),
      synopsis_(std::move(synopsis)),
      summary_(std::move(summary)),
      options_(std::move(options)),
      min_positional_(min_positional),
      max_positional_(max_positional) {}

const Option* Args::find_long(std::string_view name) const {
  for (const auto& o : options_) {
    if (o.name == name) return &o;
  }
  return nullptr;
}

const Option* Args::find_short(char c) const {
  for (const auto& o : options_) {
    if (o.short_name != 0 && o.short_name == c) return &o;
  }
  return nullptr;
}

Result<void> Args::parse(const std::vector<std::string>& args) {
  bool only_positional = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (only_positional || arg.size() < 2 || arg[0] != '-') {
      positional_.push_back(arg);
      continue;
    }
    if (arg == "--") {
      only_positional = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      help_ = true;
      return ok();
    }
    const Option* opt = nullptr;
    std::string shown = arg;
    bool has_inline = false;
    std::string inline_value;
    if (arg.rfind("--", 0) == 0) {
      std::string name = arg.substr(2);
      if (auto eq = name.find('='); eq != std::string::npos) {
        has_inline = true;
        inline_value = name.substr(eq + 1);
        name.resize(eq);
        shown = "--" + name;
      }
      opt = find_long(name);
    } else if (arg.size() == 2) {
      opt = find_short(arg[1]);
    }
    if (opt == nullptr) return Error::invalid("unknown flag '" + shown + "'");
    if (opt->value_name.empty()) {
      if (has_inline) return Error::invalid("flag '" + shown + "' takes no value");
      values_[opt->name] = "true";
    } else if (has_inline) {
      values_[opt->name] = inline_value;
    } else if (i + 1 < args.size()) {
      values_[opt->name] = args[++i];
    } else {
      return Error::invalid("flag '" + shown + "' needs a value " + opt->value_name);
    }
  }
  if (positional_.size() < min_positional_) {
    return Error::invalid("missing arguments: expected " + synopsis_);
  }
  if (positional_.size() > max_positional_) {
    return Error::invalid("unexpected argument '" + positional_[max_positional_] + "'");
  }
  return ok();
}

bool Args::has(std::string_view name) const { return values_.find(name) != values_.end(); }

const std::string& Args::get(std::string_view name) const {
  static const std::string kEmpty;
  if (find_long(name) == nullptr) std::abort();  // invariant: callers ask for declared options
  auto it = values_.find(name);
  return it == values_.end() ? kEmpty : it->second;
}

std::string Args::usage() const {
  std::string out = "usage: qufopctl " + command_;
  if (!synopsis_.empty()) out += " " + synopsis_;
  out += "\n\n" + summary_ + "\n";
  if (!options_.empty()) out += "\noptions:\n";
  for (const auto& o : options_) {
    std::string left = "  ";
    left += o.short_name != 0 ? std::string("-") + o.short_name + ", " : "    ";
    left += "--" + o.name;
    if (!o.value_name.empty()) left += " " + o.value_name;
    if (left.size() < 30)
      left.resize(30, ' ');
    else
      left += "  ";
    out += left + o.help + "\n";
  }
  return out;
}

}  // namespace qufop::cli
