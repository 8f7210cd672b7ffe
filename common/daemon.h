// What every qufop daemon shares: the common flags (--listen, --data-dir, --config, --log-level,
// --help), logging, an HTTP server with /healthz and /metrics, signal handling and a graceful
// stop. A daemon's main() parses with parse_daemon_command_line() and calls its run(options).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "common/config.h"
#include "common/http_server.h"
#include "common/result.h"

namespace boost::asio {
class io_context;
}

namespace qufop {

class Metrics;

struct DaemonInfo {
  std::string name;            // "keeper": the log name and the state subdirectory
  std::string binary;          // "qufop-keeper"
  std::string summary;         // one line for --help
  std::string default_listen;  // "127.0.0.1:7100"
};

inline constexpr const char* kDefaultDataDir = "/var/lib/qufop";

struct DaemonOptions {
  DaemonInfo info;
  HostPort listen;
  std::string data_dir;  // the root shared by every daemon of a host
  std::string log_level;
  Flags flags;  // every flag, for the daemon's own ones

  // data_dir/name: where this daemon keeps its files.
  std::string state_dir() const { return data_dir + "/" + info.name; }
};

// Parses argv (flags override the config file), validates the common flags and sets up logging.
// Returns the options, or the exit code to return right away: 0 after --help, 2 after a usage or
// config error (already reported as one line on stderr).
std::variant<DaemonOptions, int> parse_daemon_command_line(const DaemonInfo& info,
                                                           std::vector<FlagSpec> extra_flags,
                                                           int argc, const char* const* argv);

class Daemon {
 public:
  explicit Daemon(const DaemonOptions& options, int threads = 2,
                  http::ServerOptions server_options = {});
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  boost::asio::io_context& io();
  http::Server& server();
  Metrics& metrics();
  // Hooks run, in reverse order of registration, when a stop begins.
  void on_stop(std::function<void()> hook);
  // Hooks run, in order of registration, once the daemon listens (not when it cannot start):
  // background work that should not begin, or log, before then.
  void on_serving(std::function<void()> hook);

  // Creates the state dir, binds, serves until SIGTERM/SIGINT or request_stop(), then stops
  // gracefully (in-flight requests finish, bounded). Returns the process exit code.
  int run();
  void request_stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reports a fatal start-up error as one line on stderr ("qufop-keeper: <message>") and returns
// the exit code to leave with.
int report_fatal(const std::string& binary, const std::string& message, int exit_code = 1);

// mkdir -p with the given mode for created directories.
Result<void> make_dirs(const std::string& path, unsigned mode = 0755);

}  // namespace qufop
