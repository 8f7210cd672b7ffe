#include "gate/gate.h"

#include <spdlog/spdlog.h>

#include <csignal>

#include "common/metrics.h"
#include "gate/options.h"
#include "gate/server.h"
#include "gate/table.h"

namespace qufop::gate {

const DaemonInfo& info() {
  static const DaemonInfo kInfo{
      "gate", "qufop-gate", "The data path: routes requests to UFOP instances.", "127.0.0.1:7500"};
  return kInfo;
}

std::vector<FlagSpec> flags() { return option_flags(); }

namespace {

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

int run(const DaemonOptions& daemon) {
  auto options = options_from_flags(daemon.flags);
  if (!options) return report_fatal(daemon.info.binary, options.error().message, 2);
  std::signal(SIGPIPE, SIG_IGN);
  if (auto r = make_dirs(daemon.state_dir(), 0700); !r) {
    return report_fatal(daemon.info.binary, "data dir: " + r.error().message);
  }

  Metrics metrics;
  metrics.describe("qufop_build_info", Metrics::Type::kGauge, "Version of this qufop binary.");
  metrics.set("qufop_build_info", "component=\"gate\",version=\"" QUFOP_VERSION "\"", 1);

  auto table = std::make_shared<Table>(Table::Options{options->user_rate, options->user_burst});
  Server server(*options, table, metrics);
  auto bound = server.listen(daemon.listen);
  if (!bound) return report_fatal(daemon.info.binary, "cannot listen: " + bound.error().message);
  Watcher watcher(options->keeper, table, wall_ms);
  watcher.start();
  spdlog::info("{} {} listening on {} ({} threads, keeper {})", daemon.info.binary, QUFOP_VERSION,
               bound->str(), options->threads, options->keeper.front().str());
  server.run();
  watcher.stop();
  spdlog::info("stopped");
  return 0;
}

}  // namespace qufop::gate
