#include "qufopd/supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <thread>

#include "common/daemon.h"
#include "common/http_client.h"

namespace qufop::qufopd {

namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

struct Child {
  std::string name;
  pid_t pid = -1;
  std::chrono::milliseconds stop_grace{10'000};
};

volatile sig_atomic_t g_signal = 0;
void on_signal(int sig) { g_signal = sig; }

std::string address(const Options& o, int offset) {
  return o.host + ":" + std::to_string(o.port_base + offset);
}

Result<pid_t> spawn(const std::string& binary, const std::vector<std::string>& args) {
  std::vector<std::string> argv{binary};
  argv.insert(argv.end(), args.begin(), args.end());
  pid_t pid = ::fork();
  if (pid < 0) return Error::sys("fork", errno);
  if (pid == 0) {
    // The daemons go when qufopd goes, even by SIGKILL.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // Ctrl-C reaches qufopd, which stops the daemons in order: not all of them at once.
    ::setpgid(0, 0);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    ::execv(binary.c_str(), cargv.data());
    std::fprintf(stderr, "qufopd: exec %s: %s\n", binary.c_str(), std::strerror(errno));
    ::_exit(127);
  }
  return pid;
}

// Polls `path` on the daemon until `accept(status)` or the daemon dies or 60 s pass.
Result<void> wait_ready(Child& c, const std::string& host, int port, const std::string& path,
                        bool (*accept)(int)) {
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(c.pid, &status, WNOHANG) == c.pid) {
      c.pid = -1;
      return Error::io(c.name + " exited during start-up (see its log above)");
    }
    if (g_signal) return Error::io("interrupted");
    http::Client client(host, static_cast<uint16_t>(port), {200ms, 2000ms});
    auto r = client.get(path);
    if (r && accept(r->status)) return ok();
    std::this_thread::sleep_for(50ms);
  }
  return Error{"timeout", c.name + " did not become ready within 60 s", 0};
}

bool is_200(int s) { return s == 200; }
// The scheduler answers 503 while it loads the cluster state, then 401 to an unsigned request.
bool is_401(int s) { return s == 401; }

void stop_child(Child& c) {
  if (c.pid <= 0) return;
  ::kill(c.pid, SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + c.stop_grace;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    pid_t r = ::waitpid(c.pid, &status, WNOHANG);
    if (r == c.pid || (r < 0 && errno == ECHILD)) {
      c.pid = -1;
      return;
    }
    std::this_thread::sleep_for(20ms);
  }
  std::fprintf(stderr, "qufopd: %s did not stop in %lld s; killing it\n", c.name.c_str(),
               static_cast<long long>(c.stop_grace.count() / 1000));
  ::kill(c.pid, SIGKILL);
  ::waitpid(c.pid, &status, 0);
  c.pid = -1;
}

}  // namespace

std::vector<FlagSpec> flags() {
  return {
      {"data-dir", "DIR", "the cluster's data (keeper's database, images, instances)",
       kDefaultDataDir},
      {"host", "ADDRESS", "the address every daemon listens on", "127.0.0.1"},
      {"port-base", "PORT", "keeper's port; scheduler +100, noded +200, builder +300, gate +400",
       "7100"},
      {"bin-dir", "DIR", "where the qufop-* binaries are (default: found next to qufopd)", ""},
      {"log-level", "LEVEL", "trace, debug, info, warn, error", "info"},
      {"noded-flag", "FLAG",
       "an extra flag for the node daemon (repeatable), e.g. "
       "--noded-flag=--net-subnet=10.99.0.0/24",
       "", true},
  };
}

Result<Options> options_from_flags(const Flags& f) {
  Options o;
  o.data_dir = f.get("data-dir");
  if (o.data_dir.empty()) return Error::invalid("--data-dir: must not be empty");
  std::error_code ec;
  o.data_dir = fs::absolute(o.data_dir, ec).string();
  o.host = f.get("host");
  auto base = f.get_int("port-base", 1, 65535 - 400);
  if (!base) return base.error();
  o.port_base = static_cast<int>(*base);
  o.bin_dir = f.get("bin-dir");
  o.log_level = f.get("log-level");
  o.noded_flags = f.get_all("noded-flag");
  return o;
}

Result<std::string> find_binary(const std::string& bin_dir, const std::string& component) {
  std::string name = "qufop-" + component;
  std::vector<fs::path> candidates;
  if (!bin_dir.empty()) candidates.push_back(fs::path(bin_dir) / name);
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec).parent_path();
  if (!ec) {
    candidates.push_back(self / name);
    candidates.push_back(self.parent_path() / component / name);  // the build tree
  }
  for (const auto& c : candidates) {
    if (::access(c.c_str(), X_OK) == 0) return c.string();
  }
  return Error{"not_found", name + " not found next to qufopd (give --bin-dir)", 0};
}

int run(const Options& o) {
  const char* prog = "qufopd";
  if (auto r = make_dirs(o.data_dir, 0755); !r) return report_fatal(prog, r.error().message);
  std::map<std::string, std::string> binaries;
  for (const char* c : {"keeper", "scheduler", "builder", "gate", "noded"}) {
    auto b = find_binary(o.bin_dir, c);
    if (!b) return report_fatal(prog, b.error().message, 2);
    binaries[c] = *b;
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);

  const std::string keeper_url = "http://" + address(o, 0);
  struct Step {
    std::string name;
    std::vector<std::string> args;
    int port;
    std::string ready_path;
    bool (*ready)(int);
    std::chrono::milliseconds stop_grace;
  };
  auto common = [&](int offset) {
    return std::vector<std::string>{"--listen", address(o, offset), "--data-dir",
                                    o.data_dir, "--log-level",      o.log_level};
  };
  std::vector<Step> steps = {
      {"keeper", common(0), o.port_base, "/healthz", is_200, 10s},
      {"scheduler", common(100), o.port_base + 100, "/v1/whoami", is_401, 10s},
      {"builder", common(300), o.port_base + 300, "/healthz", is_200, 30s},
      {"gate", common(400), o.port_base + 400, "/healthz", is_200, 10s},
      {"noded", common(200), o.port_base + 200, "/healthz", is_200, 120s},
  };
  auto add = [](Step& s, std::vector<std::string> more) {
    s.args.insert(s.args.end(), more.begin(), more.end());
  };
  add(steps[1], {"--keeper", keeper_url, "--builder", address(o, 300), "--gate", address(o, 400)});
  add(steps[3], {"--keeper", keeper_url});
  // Build scripts run in the sandbox too: its pid 1 is the qufop-init beside the node daemon.
  add(steps[2], {"--init", (fs::path(binaries["noded"]).parent_path() / "qufop-init").string()});
  add(steps[4],
      {"--scheduler", address(o, 100), "--node-address", o.host, "--stop-instances-on-exit"});
  add(steps[4], o.noded_flags);

  std::vector<Child> children;
  auto stop_all = [&] {
    for (auto it = children.rbegin(); it != children.rend(); ++it) {
      std::fprintf(stderr, "qufopd: stopping %s\n", it->name.c_str());
      stop_child(*it);
    }
  };
  for (const auto& s : steps) {
    auto pid = spawn(binaries[s.name], s.args);
    if (!pid) {
      stop_all();
      return report_fatal(prog, "starting " + s.name + ": " + pid.error().message);
    }
    children.push_back({s.name, *pid, s.stop_grace});
    if (auto r = wait_ready(children.back(), o.host, s.port, s.ready_path, s.ready); !r) {
      stop_all();
      if (g_signal) return 130;
      return report_fatal(prog, r.error().message);
    }
    std::fprintf(stderr, "qufopd: %s up on %s\n", s.name.c_str(),
                 (o.host + ":" + std::to_string(s.port)).c_str());
  }
  std::fprintf(stderr,
               "qufopd: cluster up. The admin's qufopctl config: %s/admin.conf\n"
               "qufopd:   e.g. qufopctl --config %s/admin.conf nodes\n"
               "qufopd: Ctrl-C stops everything.\n",
               o.data_dir.c_str(), o.data_dir.c_str());

  int code = 0;
  while (!g_signal) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      for (auto& c : children) {
        if (c.pid != pid) continue;
        c.pid = -1;
        std::fprintf(stderr, "qufopd: %s exited unexpectedly (status %d); stopping the cluster\n",
                     c.name.c_str(), status);
        code = 1;
      }
      if (code) break;
    }
    std::this_thread::sleep_for(100ms);
  }
  stop_all();
  std::fprintf(stderr, "qufopd: stopped\n");
  return code ? code : 0;
}

}  // namespace qufop::qufopd
