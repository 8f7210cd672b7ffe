// Scale-out on one real node: resize a registered UFOP 0 -> N through the scheduler's public API
// and time, from the moment the resize is sent:
//   assigned   every instance has a node (the scheduler placed them; answered with the resize)
//   answering  N distinct host ports of the node answer HTTP (what a user sees)
//   running    the scheduler lists every instance running (it learns this from heartbeats)
// then resize to 0 and wait until every instance is gone and no port answers; RUNS times. Prints
// each run and the median. The host ports are probed directly (the whole range, non-blocking
// connects) so the answering time does not depend on when the scheduler hears about them.
//   qufop_scaleout_bench --scheduler HOST:PORT --admin-conf FILE --ufop NAME --node-address IP
//                        --ports FIRST-LAST --registry HOST:PORT [--count 50] [--runs 3]
//                        [--timeout 60]
// It first waits for the scheduler and one node up, then registers the UFOP (if new) with a
// version whose image is the builder's busybox:latest running `httpd -f -p 9100`.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/api.h"
#include "common/api_client.h"
#include "common/json.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using qufop::api::ApiClient;
using qufop::api::InstanceState;

struct Options {
  std::string scheduler_host;
  uint16_t scheduler_port = 0;
  std::string admin_conf, ufop, node_address, registry;
  int first_port = 0, last_port = 0, count = 50, runs = 3, timeout_s = 60;
};

[[noreturn]] void die(const std::string& what) {
  std::cerr << "scaleout_bench: " << what << "\n";
  std::exit(1);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (i + 1 >= argc) die(k + ": missing value");
    std::string v = argv[++i];
    if (k == "--scheduler") {
      auto c = v.rfind(':');
      if (c == std::string::npos) die("--scheduler: expected HOST:PORT");
      o.scheduler_host = v.substr(0, c);
      o.scheduler_port = static_cast<uint16_t>(std::stoi(v.substr(c + 1)));
    } else if (k == "--admin-conf") {
      o.admin_conf = v;
    } else if (k == "--ufop") {
      o.ufop = v;
    } else if (k == "--registry") {
      o.registry = v;
    } else if (k == "--node-address") {
      o.node_address = v;
    } else if (k == "--ports") {
      if (std::sscanf(v.c_str(), "%d-%d", &o.first_port, &o.last_port) != 2 || o.first_port <= 0 ||
          o.last_port < o.first_port || o.last_port > 65535) {
        die("--ports: expected FIRST-LAST");
      }
    } else if (k == "--count") {
      o.count = std::stoi(v);
    } else if (k == "--runs") {
      o.runs = std::stoi(v);
    } else if (k == "--timeout") {
      o.timeout_s = std::stoi(v);
    } else {
      die("unknown flag " + k);
    }
  }
  if (o.scheduler_host.empty() || o.admin_conf.empty() || o.ufop.empty() ||
      o.node_address.empty() || o.registry.empty() || o.first_port == 0 || o.count <= 0 ||
      o.runs <= 0) {
    die("usage: see the comment at the top of bench/scaleout/scaleout_bench.cc");
  }
  return o;
}

qufop::auth::Credentials admin(const std::string& file) {
  std::ifstream in(file);
  if (!in) die("cannot read " + file);
  qufop::auth::Credentials c;
  std::string line;
  while (std::getline(in, line)) {
    auto eq = line.find(" = ");
    if (eq == std::string::npos || line[0] == '#') continue;
    if (line.substr(0, eq) == "access_key") c.access_key = line.substr(eq + 3);
    if (line.substr(0, eq) == "secret_key") c.secret_key = line.substr(eq + 3);
  }
  if (c.secret_key.empty()) die(file + ": no secret_key");
  return c;
}

// Probes every port of the range at once (non-blocking connects, one poll), then asks each
// connected one for an HTTP answer. Returns the ports whose instance answered.
std::set<int> answering_ports(const Options& o, const std::set<int>& skip = {}) {
  struct Probe {
    int port, fd;
  };
  std::vector<Probe> probes;
  in_addr addr{};
  ::inet_pton(AF_INET, o.node_address.c_str(), &addr);
  for (int p = o.first_port; p <= o.last_port; ++p) {
    if (skip.count(p)) continue;
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(p));
    sa.sin_addr = addr;
    int r = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    if (r == 0 || errno == EINPROGRESS) {
      probes.push_back({p, fd});
    } else {
      ::close(fd);
    }
  }
  // Connected sockets: request sent once writable, answer read once readable.
  std::set<int> out;
  std::vector<pollfd> pfds;
  for (auto& pr : probes) pfds.push_back({pr.fd, POLLOUT, 0});
  std::vector<int> stage(probes.size(), 0);  // 0 connecting, 1 request sent, 2 done
  // A port whose instance address is not up yet hangs in ARP: give up on it after 50 ms.
  auto deadline = Clock::now() + 50ms;
  while (Clock::now() < deadline) {
    int left = 0;
    for (size_t i = 0; i < probes.size(); ++i) left += stage[i] < 2;
    if (left == 0) break;
    int ms = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    if (::poll(pfds.data(), pfds.size(), std::max(ms, 1)) <= 0) break;
    for (size_t i = 0; i < probes.size(); ++i) {
      auto& pf = pfds[i];
      if (stage[i] == 2 || pf.revents == 0) continue;
      if (pf.revents & (POLLERR | POLLHUP)) {
        stage[i] = 2;
        pf.fd = -1;
        continue;
      }
      if (stage[i] == 0 && (pf.revents & POLLOUT)) {
        const char req[] = "GET / HTTP/1.0\r\n\r\n";
        if (::write(pf.fd, req, sizeof req - 1) != static_cast<ssize_t>(sizeof req - 1)) {
          stage[i] = 2;
          pf.fd = -1;
          continue;
        }
        stage[i] = 1;
        pf.events = POLLIN;
      } else if (stage[i] == 1 && (pf.revents & POLLIN)) {
        char buf[8] = {};
        if (::read(pf.fd, buf, 5) == 5 && std::memcmp(buf, "HTTP/", 5) == 0) {
          out.insert(probes[i].port);
        }
        stage[i] = 2;
        pf.fd = -1;
      }
      pf.revents = 0;
    }
  }
  for (auto& pr : probes) ::close(pr.fd);
  return out;
}

struct Counts {
  int total = 0, assigned = 0, running = 0;
};

Counts instance_counts(ApiClient& client, const std::string& ufop) {
  Counts c;
  auto r = client.call("GET", "/v1/ufops/" + ufop + "/instances");
  if (!r.ok() || r->status != 200) return {-1, -1, -1};
  auto v = qufop::json::parse(r->body);
  if (!v || !v->is_object()) return {-1, -1, -1};
  for (const auto& i : v->at("instances").as_array()) {
    auto rec = qufop::api::instance_from_json(i);
    if (!rec) continue;
    ++c.total;
    c.assigned += !rec->node.empty();
    c.running += rec->state == InstanceState::kRunning;
  }
  return c;
}

void resize(ApiClient& client, const std::string& ufop, int count) {
  auto r = client.call("POST", "/v1/ufops/" + ufop + "/resize",
                       "{\"count\":" + std::to_string(count) + "}");
  if (!r.ok()) die("resize: " + r.error().message);
  if (r->status != 200) die("resize: " + std::to_string(r->status) + " " + r->body);
}

// The scheduler answers signed requests and at least one node is up.
void wait_ready(ApiClient& client) {
  auto deadline = Clock::now() + 30s;
  while (Clock::now() < deadline) {
    auto r = client.call("GET", "/v1/nodes");
    if (r.ok() && r->status == 200 && r->body.find("\"health\":\"up\"") != std::string::npos) {
      return;
    }
    std::this_thread::sleep_for(50ms);
  }
  die("no node up at the scheduler after 30 s");
}

// The UFOP (kept if it exists) and a version of busybox httpd; 10 millicores and 32 MiB each
// (so that 50 fit a small machine: placement never overcommits).
void register_ufop(const Options& o, ApiClient& client) {
  auto r = client.call("POST", "/v1/ufops", "{\"name\":\"" + o.ufop + "\",\"mode\":2}");
  if (!r.ok() || (r->status != 201 && r->status != 409)) {
    die("register " + o.ufop + ": " + (r.ok() ? r->body : r.error().message));
  }
  if (r->status == 409) return;
  r = client.call(
      "POST", "/v1/ufops/" + o.ufop + "/versions",
      "{\"spec\":{\"registry\":\"" + o.registry +
          "\",\"image\":\"busybox\",\"reference\":\"latest\","
          "\"argv\":[\"/bin/busybox\",\"httpd\",\"-f\",\"-p\",\"9100\",\"-h\",\"/tmp\"],"
          "\"port\":9100,\"cpu_millis\":10,\"memory_bytes\":33554432,"
          "\"stop_wait_ms\":1000}}");
  if (!r.ok() || r->status != 201) {
    die("add version: " + (r.ok() ? r->body : r.error().message));
  }
}

double secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Run {
  double assigned = -1, answering = -1, running = -1;
};

Run one_run(const Options& o, ApiClient& client) {
  Run run;
  auto t0 = Clock::now();
  resize(client, o.ufop, o.count);
  auto deadline = t0 + std::chrono::seconds(o.timeout_s);
  // The API and the ports are polled on their own threads so neither delays the other's clock.
  std::thread api([&] {
    ApiClient own(o.scheduler_host, o.scheduler_port, admin(o.admin_conf), {500ms, 5000ms});
    while (Clock::now() < deadline && run.running < 0) {
      Counts c = instance_counts(own, o.ufop);
      auto now = secs(Clock::now() - t0);
      if (run.assigned < 0 && c.assigned == o.count) run.assigned = now;
      if (c.running == o.count) run.running = now;
      std::this_thread::sleep_for(5ms);
    }
  });
  std::set<int> answered;  // an instance that answered keeps answering while scaling up
  while (Clock::now() < deadline) {
    answered.merge(answering_ports(o, answered));
    if (static_cast<int>(answered.size()) >= o.count) {
      run.answering = secs(Clock::now() - t0);
      break;
    }
    std::this_thread::sleep_for(5ms);
  }
  api.join();
  return run;
}

void scale_to_zero(const Options& o, ApiClient& client) {
  resize(client, o.ufop, 0);
  auto deadline = Clock::now() + std::chrono::seconds(o.timeout_s);
  while (Clock::now() < deadline) {
    if (instance_counts(client, o.ufop).total == 0 && answering_ports(o).empty()) return;
    std::this_thread::sleep_for(100ms);
  }
  die("resize to 0: instances still there after " + std::to_string(o.timeout_s) + " s");
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  ApiClient client(o.scheduler_host, o.scheduler_port, admin(o.admin_conf), {500ms, 5000ms});
  wait_ready(client);
  register_ufop(o, client);
  if (instance_counts(client, o.ufop).total != 0) scale_to_zero(o, client);
  std::vector<double> assigned, answering, running;
  for (int i = 1; i <= o.runs; ++i) {
    Run r = one_run(o, client);
    std::printf(
        "run %d: all assigned %.3f s, all %d answering %.3f s, all reported running %.3f s\n", i,
        r.assigned, o.count, r.answering, r.running);
    std::fflush(stdout);
    if (r.answering < 0 || r.running < 0 || r.assigned < 0) {
      die("run " + std::to_string(i) + ": not all " + std::to_string(o.count) +
          " instances within " + std::to_string(o.timeout_s) + " s");
    }
    assigned.push_back(r.assigned);
    answering.push_back(r.answering);
    running.push_back(r.running);
    scale_to_zero(o, client);
  }
  std::printf(
      "resize 0->%d on one node, median of %d: %.2f s to all %d answering "
      "(all assigned %.3f s, all reported running %.2f s)\n",
      o.count, o.runs, median(answering), o.count, median(assigned), median(running));
  std::printf("anchor: target < 3 s; Kubernetes pod start SLO 5 s p99 for one pod\n");
  return 0;
}
