#include "scheduler/scheduler.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>

#include <spdlog/spdlog.h>
#include "common/auth.h"
#include "common/files.h"
#include "common/random.h"
#include "keeper/client.h"
#include "scheduler/controller.h"
#include "scheduler/records.h"
#include "scheduler/service.h"
#include "scheduler/users.h"

namespace qufop::scheduler {

const DaemonInfo& info() {
  static const DaemonInfo kInfo{
      "scheduler", "qufop-scheduler",
      "The controller: public API, placement, reconciliation, gray upgrades.", "127.0.0.1:7200"};
  return kInfo;
}

std::vector<FlagSpec> flags() {
  return {
      {"keeper", "URL[,URL]", "keeper (or etcd) endpoints, failing over in order",
       "http://127.0.0.1:7100"},
      {"join-token", "TOKEN",
       "the cluster token nodes present; default: <data-dir>/scheduler/join-token, created "
       "on first start",
       ""},
      {"node-timeout", "DURATION", "a node silent this long is down and its instances move", "10s"},
      {"reconcile-period", "DURATION", "desired vs actual is compared at least this often", "1s"},
      {"start-timeout", "DURATION",
       "an assigned instance its node has not reported for this long has failed", "60s"},
      {"seed", "N", "placement tie-break seed (0: from the clock)", "0"},
      {"builder", "HOST:PORT", "the builder's API (builds, base image imports)", "127.0.0.1:7400"},
      {"registry", "HOST:PORT", "where nodes pull images from (default: the builder's address)",
       ""},
      {"gate", "HOST:PORT", "the gate's address, written to admin.conf for qufopctl",
       "127.0.0.1:7500"},
      {"admin-conf", "FILE",
       "where the first admin's qufopctl config is written (default: <data-dir>/admin.conf)", ""},
  };
}

namespace {

// The token given, or the one in the state dir (created, mode 0600, on first start).
Result<std::string> join_token(const DaemonOptions& options) {
  if (!options.flags.get("join-token").empty()) return options.flags.get("join-token");
  QF_TRY(make_dirs(options.state_dir(), 0700));
  std::string path = options.state_dir() + "/join-token";
  if (auto token = auth::read_token_file(path); token && !token->empty()) return *token;
  auto generated = random_hex(16);
  if (!generated) return generated.error();
  std::string token = *generated;
  QF_TRY(write_file_atomic(path, token + "\n", 0600));
  spdlog::debug("created the cluster join token in {}", path);
  return token;
}

// A ready qufopctl config for the first admin (mode 0600), written when the admin is created
// and whenever the file is missing.
Result<void> write_admin_conf(const std::string& path,
                              const std::optional<api::UserRecord>& created, const Users& users,
                              const std::string& scheduler, const std::string& gate) {
  std::optional<api::UserRecord> admin = created;
  if (!admin) {
    if (::access(path.c_str(), F_OK) == 0) return ok();
    for (const auto& u : users.list()) {
      if (u.admin) {
        admin = u;
        break;
      }
    }
    if (!admin) return ok();
  }
  std::string text = "# qufopctl configuration of the cluster's admin (qufopctl --config " + path +
                     ").\n# Keep it secret: anyone with these keys administers the cluster.\n"
                     "scheduler = " +
                     scheduler + "\ngate = " + gate + "\naccess_key = " + admin->access_key +
                     "\nsecret_key = " + admin->secret_key + "\n";
  QF_TRY(write_file_atomic(path, text, 0600));
  spdlog::info("wrote the admin's qufopctl config to {}", path);
  return ok();
}

Result<ControllerOptions> controller_options(const Flags& flags) {
  ControllerOptions o;
  auto duration = [&](const char* name, std::chrono::milliseconds& out) -> Result<void> {
    auto ms = parse_duration_ms(flags.get(name));
    if (!ms || *ms <= 0)
      return Error::invalid(std::string("--") + name + ": expected a duration such as 10s");
    out = std::chrono::milliseconds(*ms);
    return ok();
  };
  QF_TRY(duration("node-timeout", o.node_timeout));
  QF_TRY(duration("reconcile-period", o.reconcile_period));
  QF_TRY(duration("start-timeout", o.start_timeout));
  auto seed = flags.get_int("seed", 0, INT64_MAX);
  if (!seed) return seed.error();
  o.seed = static_cast<uint64_t>(*seed);
  return o;
}

}  // namespace

int run(const DaemonOptions& options) {
  const auto& binary = options.info.binary;
  auto endpoints = keeper::parse_endpoints(options.flags.get("keeper"));
  if (!endpoints) return report_fatal(binary, "--keeper: " + endpoints.error().message, 2);
  auto copts = controller_options(options.flags);
  if (!copts) return report_fatal(binary, copts.error().message, 2);
  auto token = join_token(options);
  if (!token) return report_fatal(binary, "data dir: join token: " + token.error().message);

  auto builder = parse_host_port(options.flags.get("builder"), false);
  if (!builder) return report_fatal(binary, "--builder: " + builder.error().message, 2);
  std::string registry = options.flags.get("registry");
  if (registry.empty()) registry = builder->str();
  if (auto r = parse_host_port(registry, false); !r) {
    return report_fatal(binary, "--registry: " + r.error().message, 2);
  }
  std::string admin_conf = options.flags.get("admin-conf");
  if (admin_conf.empty()) admin_conf = options.data_dir + "/admin.conf";
  HostPort self = options.listen;
  if (self.host.empty() || self.host == "0.0.0.0") self.host = "127.0.0.1";

  keeper::Client client(*endpoints);
  RecordStore store(client);
  Users users(store);
  copts->on_load = [&]() -> Result<void> {
    auto admin = users.load(client);
    if (!admin) return admin.error();
    return write_admin_conf(admin_conf, *admin, users, self.str(), options.flags.get("gate"));
  };
  Daemon daemon(options, 4);
  Controller controller(store, *copts, &daemon.metrics());
  Service service(daemon.server(), controller, users, {*token, *builder, registry});
  daemon.on_serving([&controller] { controller.start(); });
  daemon.on_stop([&controller, &service] {
    controller.stop();
    service.shutdown();
  });
  return daemon.run();
}

}  // namespace qufop::scheduler
