// qufop-noded: the daemon. Wires the agent (agent.h) to the real runtime (instance_runtime.h)
// and the scheduler (control.h), and serves the local view for the CLI:
//   GET /v1/instances                         {"node": ID, "instances": [InstanceStatus…]}
//   GET /v1/instances/<id>/logs[?follow=1]    output.log (streamed, following, with follow)
#include "noded/noded.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common/auth.h"

#include <atomic>
#include <boost/json.hpp>
#include <cstdio>
#include <memory>
#include <thread>

#include "common/files.h"
#include "common/json.h"
#include "common/metrics.h"
#include "netfilter/network.h"
#include "noded/agent.h"
#include "noded/control.h"
#include "noded/instance_runtime.h"
#include "noded/thread_pool.h"

namespace qufop::noded {

const DaemonInfo& info() {
  static const DaemonInfo kInfo{"noded", "qufop-noded",
                                "The node daemon: reports resources, builds and stops sandboxes.",
                                "127.0.0.1:7300"};
  return kInfo;
}

std::vector<FlagSpec> flags() {
  std::vector<FlagSpec> f = {
      {"scheduler", "HOST:PORT", "the scheduler's address", "127.0.0.1:7200"},
      {"join-token", "TOKEN", "the cluster token (Authorization: Bearer) for the scheduler", ""},
      {"join-token-file", "FILE",
       "read the cluster token from FILE (default: DATA-DIR/scheduler/join-token when present)",
       ""},
      {"node-id", "ID", "this node's id (default: the hostname)", ""},
      {"node-address", "HOST", "where this node's published host ports are reached", "127.0.0.1"},
      {"labels", "K=V,K=V", "node labels for placement constraints", ""},
      {"reserve-cpu", "MILLIS", "cpu kept for the host, in millicores", "0"},
      {"reserve-memory", "SIZE", "memory kept for the host", "256m"},
      {"cgroup-parent", "PATH", "cgroup under which instances run (one per noded)", "qufop"},
      {"heartbeat", "DURATION", "heartbeat interval", "1s"},
      {"cooling", "DURATION", "how long a stopping instance is reported cooling first", "1s"},
      {"stop-instances-on-exit", "",
       "on SIGTERM, StopWait-stop every instance and tear the node network down (the all-in-one; "
       "by default instances outlive a noded restart)",
       ""},
      {"log-max", "SIZE", "rotate an instance's output.log past this size", "10m"},
      {"log-keep", "N", "output files kept per instance, output.log included", "3"},
      {"init", "PATH", "the qufop-init binary (default: next to qufop-noded)", ""},
  };
  for (auto& n : netfilter::network_flags()) f.push_back(std::move(n));
  return f;
}

namespace {

Result<std::map<std::string, std::string>> parse_labels(const std::string& text) {
  std::map<std::string, std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t comma = text.find(',', pos);
    std::string kv = text.substr(pos, comma == std::string::npos ? comma : comma - pos);
    pos = comma == std::string::npos ? text.size() : comma + 1;
    if (kv.empty()) continue;
    size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      return Error::invalid("--labels: '" + kv + "' is not K=V");
    }
    out[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return out;
}

Result<std::string> join_token(const DaemonOptions& o) {
  const Flags& f = o.flags;
  if (!f.get("join-token").empty()) return f.get("join-token");
  std::string file = f.get("join-token-file");
  bool given = !file.empty();
  if (!given) file = o.data_dir + "/scheduler/join-token";
  auto text = auth::read_token_file(file);
  if (!text) {
    if (given) return text.error().wrap("--join-token-file");
    if (text.error().sys_errno != ENOENT) return text.error().wrap("data dir: join token");
    return std::string();  // a scheduler without a token (tests) or started later
  }
  return *text;
}

Result<ControlOptions> control_options(const DaemonOptions& o) {
  const Flags& f = o.flags;
  ControlOptions c;
  auto sched = parse_host_port(f.get("scheduler"), false);
  if (!sched) return sched.error().wrap("--scheduler");
  c.scheduler = *sched;
  auto token = join_token(o);
  if (!token) return token.error();
  c.token = *token;
  c.node_id = f.get("node-id");
  if (c.node_id.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    c.node_id = host;
  }
  if (auto r = api::check_node_id(c.node_id); !r) return r.error().wrap("--node-id");
  c.address = f.get("node-address");
  c.api = o.listen.str();
  auto labels = parse_labels(f.get("labels"));
  if (!labels) return labels.error();
  c.labels = *labels;
  auto cpu = f.get_int("reserve-cpu", 0, 1'000'000'000);
  if (!cpu) return cpu.error();
  c.reserve.cpu_millis = *cpu;
  auto mem = parse_bytes(f.get("reserve-memory"));
  if (!mem) return mem.error().wrap("--reserve-memory");
  c.reserve.memory_bytes = static_cast<int64_t>(*mem);
  auto hb = parse_duration_ms(f.get("heartbeat"));
  if (!hb || *hb <= 0) return Error::invalid("--heartbeat: expected a duration > 0");
  c.heartbeat = std::chrono::milliseconds(*hb);
  c.data_dir = o.data_dir;
  return c;
}

Result<RuntimeOptions> runtime_options(const DaemonOptions& o) {
  const Flags& f = o.flags;
  RuntimeOptions r;
  r.state_dir = o.state_dir();
  r.cgroup_parent = f.get("cgroup-parent");
  r.init_path = f.get("init");
  auto max = parse_bytes(f.get("log-max"));
  if (!max || *max == 0) return Error::invalid("--log-max: expected a size > 0");
  r.log_max_bytes = *max;
  auto keep = f.get_int("log-keep", 1, 100);
  if (!keep) return keep.error();
  r.log_keep = static_cast<int>(*keep);
  return r;
}

json::Value instances_json(const api::NodeStatus& s) {
  json::Object o;
  o["node"] = s.id;
  json::Array list;
  for (const auto& in : s.instances) list.push_back(api::to_json(in));
  o["instances"] = std::move(list);
  return o;
}

// GET /v1/instances/<id>/logs[?follow=1]: the whole output.log, and with follow whatever is
// appended after, until the client goes away (a copy-truncate restarts from the top).
void serve_logs(SandboxRuntime& rt, std::atomic<bool>& stopping, http::Request req,
                http::Responder res) {
  const std::string prefix = "/v1/instances/";
  std::string rest = req.path.substr(prefix.size());
  size_t slash = rest.find('/');
  if (slash == std::string::npos || rest.substr(slash) != "/logs" || slash == 0) {
    return res.send(http::Response::error(404, "not_found", "no route " + req.path));
  }
  std::string id = rest.substr(0, slash);
  if (id.find("..") != std::string::npos) {
    return res.send(http::Response::error(400, "invalid_argument", "bad instance id"));
  }
  std::string path = rt.log_path(id);
  bool follow = req.query_param("follow") == "1" || req.query_param("follow") == "true";
  if (!follow) {
    auto text = read_text_file(path);
    if (!text) return res.send(http::Response::error(404, "not_found", "no log for " + id));
    return res.send(http::Response::text(200, std::move(*text)));
  }
  if (::access(path.c_str(), R_OK) != 0) {
    return res.send(http::Response::error(404, "not_found", "no log for " + id));
  }
  std::thread([path, &stopping, res = std::move(res)]() mutable {
    res.start_stream(200, "text/plain; charset=utf-8");
    off_t offset = 0;
    while (!res.closed() && !stopping) {
      FILE* f = std::fopen(path.c_str(), "r");
      if (!f) break;  // the instance was forgotten
      struct stat st {};
      if (::fstat(fileno(f), &st) == 0 && st.st_size < offset) offset = 0;  // rotated
      std::fseek(f, offset, SEEK_SET);
      char buf[65536];
      size_t n;
      std::string chunk;
      while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) chunk.append(buf, n);
      std::fclose(f);
      offset += static_cast<off_t>(chunk.size());
      if (!chunk.empty()) res.write(std::move(chunk));
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    res.finish();
  }).detach();
}

}  // namespace

int run(const DaemonOptions& options) {
  const std::string& binary = options.info.binary;
  if (auto r = make_dirs(options.state_dir(), 0700); !r) {
    return report_fatal(binary, "data dir: " + r.error().message);
  }
  auto copts = control_options(options);
  if (!copts) return report_fatal(binary, copts.error().message, 2);
  auto ropts = runtime_options(options);
  if (!ropts) return report_fatal(binary, ropts.error().message, 2);
  auto runtime = SandboxRuntime::open(
      *ropts, netfilter::network_config_from_flags(options.flags, options.state_dir() + "/net"));
  if (!runtime) return report_fatal(binary, runtime.error().message);
  auto cooling = parse_duration_ms(options.flags.get("cooling"));
  if (!cooling) return report_fatal(binary, cooling.error().wrap("--cooling").message, 2);

  // Everything below lives until _exit (see the end).
  auto* rt = runtime->release();
  auto* work = new ThreadPool(4);
  auto* probes = new ThreadPool(4);
  AgentOptions ao;
  ao.cooling = std::chrono::milliseconds(*cooling);
  auto* agent = new Agent(
      *rt, [work](std::function<void()> f) { work->submit(std::move(f)); },
      [probes](std::function<void()> f) { probes->submit(std::move(f)); },
      [] {
        return std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
            .count();
      },
      ao);
  agent->adopt(rt->restore());
  auto* control = new Control(*agent, *rt, *copts);
  auto* stopping = new std::atomic<bool>(false);

  Daemon daemon(options);
  daemon.server().route("GET", "/v1/instances", [control](const http::Request&) {
    return http::Response{
        200, "application/json", {}, json::serialize(instances_json(control->status(false)))};
  });
  daemon.server().route_prefix("GET", "/v1/instances/",
                               [rt, stopping](http::Request req, http::Responder res) {
                                 serve_logs(*rt, *stopping, std::move(req), std::move(res));
                               });
  daemon.metrics().describe("qufop_noded_instances", Metrics::Type::kGauge,
                            "Instances on this node.");
  daemon.metrics().set_callback("qufop_noded_instances", "",
                                [agent] { return static_cast<double>(agent->snapshot().size()); });
  daemon.on_stop([stopping] { *stopping = true; });
  daemon.on_serving([&copts, control] {
    spdlog::info("node {} (address {}), scheduler {}", copts->node_id, copts->address,
                 copts->scheduler.str());
    control->start();
  });
  int code = daemon.run();
  control->stop();
  work->stop();
  probes->stop();
  if (options.flags.get_bool("stop-instances-on-exit")) rt->stop_all();
  rt->shutdown();
  spdlog::default_logger()->flush();
  // The assignments long poll may be blocked for its whole wait and log followers are on their
  // own threads: leave without running destructors under them. Instances keep running.
  std::fflush(stdout);
  std::fflush(stderr);
  ::_exit(code);
}

}  // namespace qufop::noded
