#include "common/daemon.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <optional>
#include <thread>

#include "common/http_server.h"
#include "common/log.h"
#include "common/metrics.h"

namespace qufop {

namespace net = boost::asio;

int report_fatal(const std::string& binary, const std::string& message, int exit_code) {
  std::fprintf(stderr, "%s: %s\n", binary.c_str(), message.c_str());
  return exit_code;
}

Result<void> make_dirs(const std::string& path, unsigned mode) {
  if (path.empty()) return Error::invalid("empty directory path");
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    std::string part = path.substr(0, pos);
    if (mkdir(part.c_str(), mode) != 0 && errno != EEXIST)
      return Error::sys("mkdir(" + part + ")", errno);
  }
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return Error::sys("stat(" + path + ")", errno);
  if (!S_ISDIR(st.st_mode)) return Error::invalid(path + " exists and is not a directory");
  return ok();
}

std::variant<DaemonOptions, int> parse_daemon_command_line(const DaemonInfo& info,
                                                           std::vector<FlagSpec> extra_flags,
                                                           int argc, const char* const* argv) {
  std::vector<FlagSpec> specs = {
      {"listen", "HOST:PORT", "address to serve the HTTP API on", info.default_listen},
      {"data-dir", "DIR", "root of the node's qufop data", kDefaultDataDir},
      {"config", "FILE", "config file of 'key = value' lines (keys are these flag names)", ""},
      {"log-level", "LEVEL", "trace, debug, info, warn, error or off", "info"},
  };
  for (auto& f : extra_flags) specs.push_back(std::move(f));
  Flags flags(info.binary, info.summary, std::move(specs));
  if (auto r = flags.parse(argc, argv); !r) {
    report_fatal(info.binary, r.error().message);
    return 2;
  }
  if (flags.help_requested()) {
    std::fputs(flags.usage().c_str(), stdout);
    return 0;
  }
  if (!flags.positional().empty()) {
    report_fatal(info.binary,
                 "unexpected argument '" + flags.positional().front() + "' (see --help)");
    return 2;
  }
  auto listen = parse_host_port(flags.get("listen"));
  if (!listen) {
    report_fatal(info.binary, "--listen: " + listen.error().message);
    return 2;
  }
  if (flags.get("data-dir").empty() || flags.get("data-dir")[0] != '/') {
    report_fatal(info.binary,
                 "--data-dir: '" + flags.get("data-dir") + "' must be an absolute path");
    return 2;
  }
  if (auto r = log::init(info.name, flags.get("log-level")); !r) {
    report_fatal(info.binary, "--log-level: " + r.error().message);
    return 2;
  }
  std::string data_dir = flags.get("data-dir");
  while (data_dir.size() > 1 && data_dir.back() == '/') data_dir.pop_back();
  std::string level = flags.get("log-level");
  return DaemonOptions{info, *listen, std::move(data_dir), std::move(level), std::move(flags)};
}

struct Daemon::Impl {
  Impl(const DaemonOptions& o, int n, http::ServerOptions so)
      : options(o), threads(n), server(ioc, std::move(so), &metrics) {}

  void begin_stop();
  void wait_for_drain(std::chrono::steady_clock::time_point deadline);

  DaemonOptions options;
  int threads;
  net::io_context ioc;
  Metrics metrics;
  http::Server server;
  std::vector<std::function<void()>> stop_hooks;
  std::vector<std::function<void()>> serving_hooks;
  net::signal_set signals{ioc, SIGTERM, SIGINT};
  std::optional<net::steady_timer> drain_timer;
  std::atomic<bool> stopping{false};
};

void Daemon::Impl::begin_stop() {
  if (stopping.exchange(true)) return;
  spdlog::info("stopping");
  server.stop();
  for (auto it = stop_hooks.rbegin(); it != stop_hooks.rend(); ++it) (*it)();
  wait_for_drain(std::chrono::steady_clock::now() + std::chrono::seconds(5));
}

// Lets requests in flight finish, up to a deadline, then ends the event loop.
void Daemon::Impl::wait_for_drain(std::chrono::steady_clock::time_point deadline) {
  if (server.open_connections() == 0 || std::chrono::steady_clock::now() >= deadline) {
    return ioc.stop();
  }
  drain_timer.emplace(ioc, std::chrono::milliseconds(20));
  drain_timer->async_wait(
      [this, deadline](boost::system::error_code) { wait_for_drain(deadline); });
}

Daemon::Daemon(const DaemonOptions& options, int threads, http::ServerOptions server_options)
    : impl_(std::make_unique<Impl>(options, threads, std::move(server_options))) {
  auto& m = impl_->metrics;
  m.describe("qufop_build_info", Metrics::Type::kGauge, "Version of this qufop binary.");
  m.set("qufop_build_info", "component=\"" + options.info.name + "\",version=\"" QUFOP_VERSION "\"",
        1);
  m.describe("qufop_process_start_time_seconds", Metrics::Type::kGauge,
             "Start time of the process since the Unix epoch.");
  m.set("qufop_process_start_time_seconds", "",
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  impl_->server.route("GET", "/healthz", [](const http::Request&) {
    return http::Response{200, "application/json", {}, R"({"status":"ok"})"};
  });
  impl_->server.route("GET", "/metrics", [this](const http::Request&) {
    return http::Response::text(200, impl_->metrics.render(), "text/plain; version=0.0.4");
  });
}

Daemon::~Daemon() = default;

net::io_context& Daemon::io() { return impl_->ioc; }
http::Server& Daemon::server() { return impl_->server; }
Metrics& Daemon::metrics() { return impl_->metrics; }
void Daemon::on_stop(std::function<void()> hook) { impl_->stop_hooks.push_back(std::move(hook)); }

void Daemon::on_serving(std::function<void()> hook) {
  impl_->serving_hooks.push_back(std::move(hook));
}

void Daemon::request_stop() {
  net::post(impl_->ioc, [this] { impl_->begin_stop(); });
}

int Daemon::run() {
  const auto& o = impl_->options;
  std::signal(SIGPIPE, SIG_IGN);
  if (auto r = make_dirs(o.state_dir(), 0700); !r) {
    report_fatal(o.info.binary, "data dir: " + r.error().message);
    return 1;
  }
  auto bound = impl_->server.listen(o.listen);
  if (!bound) {
    report_fatal(o.info.binary, "cannot listen: " + bound.error().message);
    return 1;
  }
  impl_->signals.async_wait([this](boost::system::error_code ec, int sig) {
    if (ec) return;
    spdlog::info("received {}", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    impl_->begin_stop();
  });
  spdlog::info("{} {} listening on {} (data in {})", o.info.binary, QUFOP_VERSION, bound->str(),
               o.state_dir());
  for (auto& hook : impl_->serving_hooks) hook();
  std::vector<std::thread> pool;
  for (int i = 1; i < impl_->threads; ++i) pool.emplace_back([this] { impl_->ioc.run(); });
  impl_->ioc.run();
  for (auto& t : pool) t.join();
  spdlog::info("stopped");
  return 0;
}

}  // namespace qufop
