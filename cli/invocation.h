// The steps every scheduler-facing subcommand starts with: parse its arguments plus the
// connection options (--config, --scheduler, --access-key, --secret-key; --json on commands that
// print records), answer --help, load the config, and report errors as one line with the exit
// codes of command.h.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "cli/args.h"
#include "cli/client.h"
#include "cli/stream.h"
#include "common/api.h"
#include "common/json.h"
#include "common/result.h"

namespace qufop::cli {

class Invocation {
 public:
  // `prints_records`: the command has --json.
  Invocation(std::string command, std::string synopsis, std::string summary,
             std::vector<Option> options, size_t min_positional, size_t max_positional,
             bool prints_records);

  // -1 to go on; otherwise the exit code to return (help printed, or a usage error).
  int parse(const std::vector<std::string>& args);

  const Args& args() const { return args_; }
  const std::string& arg(size_t i) const { return args_.positional().at(i); }
  bool json() const { return json_ && args_.has("json"); }

  // The config file (--config, $QUFOP_CONFIG, ~/.qufop/config) with the command line's
  // --scheduler/--gate/--access-key/--secret-key on top.
  Result<ClientConfig> config() const;
  Result<ApiClient> client() const;

  // "qufopctl CMD: MESSAGE (see qufopctl CMD --help)" on stderr; returns kUsage.
  int usage_error(std::string_view message) const;
  // "qufopctl: MESSAGE" on stderr; returns kFailed.
  int fail(const Error& error) const;
  // Checks a UFOP name argument (api::check_ufop_name); prints the usage error. -1 when good.
  int check_name(const std::string& name) const;

 private:
  Args args_;
  bool json_;
};

// One JSON document on stdout.
void print_json(const json::Value& v);
// The array under `field` of a JSON object answer ({"ufops": [...]}), or an error naming it.
Result<const json::Array*> list_field(const json::Value& v, std::string_view field);
// Wall-clock unix milliseconds (for ages in listings).
int64_t now_ms();
// "public", "semi-public", "private".
const char* mode_name(api::UfopMode mode);

// Prints a resize/upgrade answer ({"count","desired","unschedulable","reason"}), or its JSON.
int print_scale_result(const Invocation& inv, const std::string& name, const json::Value& v);

// Sends a signed upload with a progress bar on stderr when stderr is a terminal, else one
// "uploaded N bytes" line. The body comes from `fd` (`size` bytes) or, when fd < 0, from `body`.
// A non-2xx answer's body is collected and returned as the error; a 2xx body goes to on_data.
Result<void> upload(const ApiClient& client, std::string target, std::string content_type, int fd,
                    uint64_t size, std::string body,
                    const std::function<bool(std::string_view)>& on_data,
                    std::chrono::milliseconds silence);

// A GET whose 2xx body is streamed to on_data (followed logs); errors as above.
Result<void> get_streaming(const ApiClient& client, std::string target,
                           const std::function<bool(std::string_view)>& on_data,
                           std::chrono::milliseconds silence);

}  // namespace qufop::cli
