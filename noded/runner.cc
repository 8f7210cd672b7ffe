#include "noded/runner.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <vector>

#include "netfilter/network.h"
#include "noded/cgroup.h"
#include "noded/cgroup_internal.h"
#include "noded/logs.h"
#include "noded/mounts.h"
#include "noded/sandbox.h"
#include "noded/seccomp.h"
#include "noded/stop_wait.h"

namespace qufop::noded {

namespace {

constexpr const char* kProgram = "qufop-noded run";
constexpr int kExitUsage = 2;
constexpr int kExitRuntime = 125;
constexpr int kExitOom = 137;

int fail(int code, const std::string& message) {
  std::cerr << kProgram << ": " << message << "\n";
  return code;
}

Result<double> parse_cpus(const std::string& text) {
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(text.c_str(), &end);
  if (text.empty() || errno != 0 || *end != '\0' || !std::isfinite(v) || v <= 0) {
    return Error::invalid("--cpus '" + text + "': expected a number of cpus > 0 (e.g. 0.5)");
  }
  return v;
}

Result<uint32_t> parse_id(const std::string& text, const std::string& what) {
  char* end = nullptr;
  errno = 0;
  unsigned long v = std::strtoul(text.c_str(), &end, 10);
  if (text.empty() || text[0] == '-' || errno != 0 || *end != '\0' || v > 0xfffffffeUL) {
    return Error::invalid("--user: " + what + " '" + text + "' is not a number");
  }
  return static_cast<uint32_t>(v);
}

std::string human_bytes(uint64_t b) {
  if (b >= (1ull << 30) && b % (1ull << 30) == 0) return std::to_string(b >> 30) + " GiB";
  if (b >= (1ull << 20) && b % (1ull << 20) == 0) return std::to_string(b >> 20) + " MiB";
  if (b >= (1ull << 10) && b % (1ull << 10) == 0) return std::to_string(b >> 10) + " KiB";
  return std::to_string(b) + " bytes";
}

Result<void> mkdir_p(const std::string& dir) {
  for (size_t pos = 1; pos != std::string::npos;) {
    pos = dir.find('/', pos + 1);
    std::string part = dir.substr(0, pos);
    if (::mkdir(part.c_str(), 0711) != 0 && errno != EEXIST) {
      return Error::sys("mkdir(" + part + ")", errno);
    }
  }
  return ok();
}

}  // namespace

std::vector<FlagSpec> run_flags() {
  std::vector<FlagSpec> flags = {
      {"rootfs", "DIR", "the root filesystem (a directory; required)", "", false},
      {"memory", "SIZE", "memory limit, swap off (64m, 1g)", "", false},
      {"cpus", "N", "cpu limit in cpus (0.5)", "", false},
      {"pids", "N", "max processes and threads", "", false},
      {"readonly", "", "mount the root read-only", "", false},
      {"user", "UID:GID", "run as this uid and gid", "65534:65534", false},
      {"env", "K=V", "an environment variable", "", true},
      {"workdir", "DIR", "working directory in the rootfs", "/", false},
      {"hostname", "NAME", "hostname (default: the sandbox id)", "", false},
      {"net", "MODE",
       "none (own network namespace, loopback only), host, or bridge (a veth on the node "
       "bridge, with --publish)",
       "none", false},
      {"publish", "HOSTPORT:PORT",
       "with --net bridge: publish instance PORT on host HOSTPORT (0 = allocate; printed)", "",
       false},
      {"stop-wait", "DURATION", "on SIGTERM/SIGINT: time for the command to exit before SIGKILL",
       "10s", false},
      {"state-dir", "DIR", "where the sandbox's run dir is made", "/run/qufop", false},
      {"log-dir", "DIR", "also write the output to a rotated output.log here (default: none)", "",
       false},
      {"log-max", "SIZE", "rotate output.log at this size", "10m", false},
      {"log-keep", "N", "log files kept, output.log included", "3", false},
      {"seccomp-cache", "DIR", "cache of the compiled seccomp profile", "/var/cache/qufop", false},
      {"init", "PATH", "the qufop-init binary (default: next to qufop-noded)", "", false},
      {"cgroup-parent", "PATH",
       "the sandbox's cgroup goes under this one (e.g. qufop); default: right under each "
       "hierarchy's root, as crun does",
       "", false},
  };
  for (auto& f : netfilter::network_flags()) flags.push_back(std::move(f));
  return flags;
}

Result<SandboxSpec> spec_from_flags(const Flags& flags, int pid) {
  SandboxSpec spec;
  spec.id = "qf-run-" + std::to_string(pid);
  if (!flags.given("rootfs") || flags.get("rootfs").empty()) {
    return Error::invalid("--rootfs DIR is required");
  }
  char resolved[PATH_MAX];
  if (!::realpath(flags.get("rootfs").c_str(), resolved)) {
    return Error::sys("rootfs " + flags.get("rootfs"), errno);
  }
  spec.layers = {resolved};
  if (flags.given("memory")) {
    auto m = parse_bytes(flags.get("memory"));
    if (!m) return m.error().wrap("--memory");
    if (*m == 0) return Error::invalid("--memory: must be > 0");
    spec.limits.memory_bytes = *m;
  }
  if (flags.given("cpus")) {
    auto c = parse_cpus(flags.get("cpus"));
    if (!c) return c.error();
    spec.limits.cpus = *c;
  }
  if (flags.given("pids")) {
    auto p = flags.get_int("pids", 2, 4'194'304);
    if (!p) return p.error();
    spec.limits.pids = *p;
  }
  spec.readonly_root = flags.get_bool("readonly");
  const std::string& user = flags.get("user");
  auto colon = user.find(':');
  auto uid = parse_id(user.substr(0, colon), "uid");
  if (!uid) return uid.error();
  auto gid = colon == std::string::npos ? uid : parse_id(user.substr(colon + 1), "gid");
  if (!gid) return gid.error();
  spec.uid = *uid;
  spec.gid = *gid;
  spec.env = flags.get_all("env");
  spec.workdir = flags.get("workdir");
  spec.hostname = flags.get("hostname");
  const std::string& net = flags.get("net");
  if (net == "none") {
    spec.net = NetMode::kNone;
  } else if (net == "host") {
    spec.net = NetMode::kHost;
  } else if (net == "bridge") {
    spec.net = NetMode::kNamespace;  // the namespace is made and wired by run_main
  } else {
    return Error::invalid("--net '" + net + "': expected none, host or bridge");
  }
  if (flags.given("publish") && net != "bridge") {
    return Error::invalid("--publish needs --net bridge");
  }
  auto sw = parse_duration_ms(flags.get("stop-wait"));
  if (!sw) return sw.error().wrap("--stop-wait");
  spec.stop_wait = std::chrono::milliseconds(*sw);
  spec.run_dir = flags.get("state-dir") + "/run-" + std::to_string(pid);
  auto log_max = parse_bytes(flags.get("log-max"));
  if (!log_max) return log_max.error().wrap("--log-max");
  spec.log_max_bytes = *log_max;
  auto keep = flags.get_int("log-keep", 1, 100);
  if (!keep) return keep.error();
  spec.log_keep = static_cast<int>(*keep);
  spec.log_dir = flags.get("log-dir");
  spec.cgroup_parent = flags.get("cgroup-parent");
  if (auto r = cgroup_internal::validate_parent(spec.cgroup_parent); !r.ok()) {
    return r.error().wrap("--cgroup-parent");
  }
  spec.argv = flags.positional();
  return spec;
}

namespace {

// SIGTERM, SIGINT and SIGHUP become events on the returned fd (-1 on error); the sandbox's
// processes get a clean mask and their own session (sandbox.cc).
int stop_signal_fd() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, sig);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  return ::signalfd(-1, &set, SFD_CLOEXEC);
}

// Until the sandbox ends by itself, or a stop signal arrives: then StopWait. The output is
// copied in the same loop (no thread for a command that only runs a moment); during StopWait,
// which blocks, on the pump's own thread, so a command that writes while it stops never blocks
// on a full pipe.
std::optional<ExitStatus> supervise(Sandbox& sb, int sigfd, OutputPump& pump) {
  for (;;) {
    std::vector<pollfd> fds = {{sb.pidfd(), POLLIN, 0}, {sigfd, POLLIN, 0}};
    std::vector<pollfd> output = pump.pollfds();
    fds.insert(fds.end(), output.begin(), output.end());
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    std::copy(fds.begin() + 2, fds.end(), output.begin());
    pump.read_ready(output);
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo info;
      (void)!::read(sigfd, &info, sizeof info);
      pump.start();
      auto stopped = stop_wait(sb);
      if (stopped) return stopped->status;
      std::cerr << kProgram << ": stopping: " << stopped.error().message << "\n";
      break;
    }
    if (fds[0].revents) {
      auto st = sb.wait(std::nullopt);
      if (st && st->has_value()) return **st;
      break;
    }
  }
  return sb.exit_status();
}

// The command's exit code, 128 + its signal, or 137 after an OOM kill (said on stderr).
int exit_code(const std::optional<ExitStatus>& status, const SandboxSpec& spec) {
  if (!status) return kExitRuntime;
  if (!status->oom_killed) return status->shell_code();
  std::cerr << kProgram << ": killed by the OOM killer";
  if (spec.limits.memory_bytes) {
    std::cerr << " (memory limit " << human_bytes(spec.limits.memory_bytes) << ")";
  }
  std::cerr << "\n";
  return kExitOom;
}

// --net bridge: a fresh network namespace wired to the node bridge (netfilter), with the
// instance port published; the destructor unpublishes and releases the address, and the veth
// goes away with the namespace.
class BridgeAttachment {
 public:
  static Result<std::unique_ptr<BridgeAttachment>> open(const Flags& flags, const std::string& id) {
    auto ports = parse_publish(flags.get("publish"));
    if (!ports) return ports.error();
    auto net = netfilter::NodeNetwork::open(
        netfilter::network_config_from_flags(flags, flags.get("state-dir") + "/net"));
    if (!net) return net.error();
    if (auto r = (*net)->setup_node(); !r) return r.error().wrap("node network");
    auto ns = netfilter::create_netns();
    if (!ns) return ns.error();
    std::unique_ptr<BridgeAttachment> self(new BridgeAttachment(std::move(*net), *ns, id));
    auto a = self->net_->attach(id, netfilter::NetnsRef::from_fd(*ns), ports->second, ports->first);
    if (!a) return a.error();
    self->attached_ = true;
    if (a->host_port != 0) {
      std::cerr << kProgram << ": published host port " << a->host_port << " -> " << a->ip.str()
                << ":" << a->instance_port << "\n";
    }
    return self;
  }

  ~BridgeAttachment() {
    if (attached_) {
      auto r = net_->detach(id_, netfilter::LinkTeardown::kGoesWithNetns);
      if (!r) std::cerr << kProgram << ": network teardown: " << r.error().message << "\n";
    }
    ::close(netns_);
    // The last runner on a host without noded takes the bridge and the table with it, so a
    // one-shot run leaves nothing behind. (Under noded, noded owns them and they stay.)
    if (net_->attachments().empty()) {
      auto r = net_->teardown_node();
      if (!r) std::cerr << kProgram << ": node network teardown: " << r.error().message << "\n";
    }
  }

  std::string netns_path() const { return "/proc/self/fd/" + std::to_string(netns_); }

 private:
  BridgeAttachment(std::unique_ptr<netfilter::NodeNetwork> net, int netns, std::string id)
      : net_(std::move(net)), netns_(netns), id_(std::move(id)) {}

  // "HOSTPORT:PORT" -> {host port (0 = allocate), instance port}; empty -> nothing published.
  static Result<std::pair<uint16_t, uint16_t>> parse_publish(const std::string& text) {
    if (text.empty()) return std::pair<uint16_t, uint16_t>{0, 0};
    auto colon = text.find(':');
    auto bad =
        Error::invalid("--publish '" + text + "': expected HOSTPORT:PORT (HOSTPORT 0 = any)");
    if (colon == std::string::npos) return bad;
    char* end = nullptr;
    unsigned long host = std::strtoul(text.c_str(), &end, 10);
    if (end != text.c_str() + colon || host > 65535) return bad;
    unsigned long port = std::strtoul(text.c_str() + colon + 1, &end, 10);
    if (*end != '\0' || port == 0 || port > 65535 || colon + 1 == text.size()) return bad;
    return std::pair<uint16_t, uint16_t>{static_cast<uint16_t>(host), static_cast<uint16_t>(port)};
  }

  std::unique_ptr<netfilter::NodeNetwork> net_;
  int netns_;
  std::string id_;
  bool attached_ = false;
};

}  // namespace

int run_main(int argc, char** argv) {
  Flags flags(kProgram, "Runs one command in a sandbox, in the foreground.", run_flags());
  if (auto r = flags.parse(argc, argv); !r.ok()) return fail(kExitUsage, r.error().message);
  if (flags.help_requested()) {
    std::cout << flags.usage() << "  -- CMD ARGS...             the command, after '--'\n";
    return 0;
  }
  if (flags.positional().empty()) {
    return fail(kExitUsage,
                "no command given (qufop-noded run --rootfs DIR [flags] -- CMD ARGS...)");
  }
  auto spec = spec_from_flags(flags, static_cast<int>(::getpid()));
  if (!spec) return fail(kExitRuntime, spec.error().message);
  // Bad input is refused before anything is created (the bridge's namespace comes below).
  SandboxSpec check = *spec;
  if (check.net == NetMode::kNamespace) check.net = NetMode::kNone;
  if (auto r = validate(check); !r.ok()) return fail(kExitRuntime, r.error().message);
  StartOptions options;
  options.init_path = flags.get("init").empty() ? default_init_path() : flags.get("init");
  if (::access(options.init_path.c_str(), X_OK) != 0) {
    return fail(kExitRuntime, "qufop-init not found at " + options.init_path + " (use --init)");
  }
  // The compiled profile from its cache (the runner never rebuilds it): a read and two built-in
  // SHA-256s, some tens of microseconds, so no thread of its own.
  std::optional<SeccompProgram> seccomp;
  if (spec->use_seccomp) {
    auto prog = load_or_build_default_profile(flags.get("seccomp-cache"));
    if (!prog) return fail(kExitRuntime, prog.error().wrap("seccomp profile").message);
    seccomp = std::move(*prog);
    options.seccomp = &*seccomp;
  }
  options.kill_with_parent = true;
  options.step_off_cpu = true;
  // Detected at the sandbox's first use of it, while pid 1 builds its rootfs.
  auto cgroups = make_deferred_cgroup_manager();
  options.cgroups = cgroups.get();
  int sigfd = stop_signal_fd();
  if (sigfd < 0) return fail(kExitRuntime, Error::sys("signalfd", errno).message);
  ::signal(SIGPIPE, SIG_IGN);  // a closed stdout must not kill the runner

  if (auto r = mkdir_p(flags.get("state-dir")); !r.ok()) {
    return fail(kExitRuntime, r.error().message);
  }
  // The sandbox's stdout and stderr are ours; with --log-dir, pipes that the pump copies to
  // ours and to a rotated log.
  std::unique_ptr<RotatingLog> log;
  int out[2] = {-1, STDOUT_FILENO}, err[2] = {-1, STDERR_FILENO};
  if (!spec->log_dir.empty()) {
    auto opened = RotatingLog::open(spec->log_dir, spec->log_max_bytes, spec->log_keep);
    if (!opened) return fail(kExitRuntime, opened.error().message);
    log = std::move(*opened);
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
      return fail(kExitRuntime, Error::sys("pipe2", errno).message);
    }
  }
  std::vector<OutputPump::Source> sources;
  if (log) sources = {{out[0], STDOUT_FILENO}, {err[0], STDERR_FILENO}};
  OutputPump pump(std::move(log), std::move(sources));
  options.stdout_fd = out[1];
  options.stderr_fd = err[1];

  std::unique_ptr<BridgeAttachment> bridge;
  if (spec->net == NetMode::kNamespace) {
    auto b = BridgeAttachment::open(flags, spec->id);
    if (!b) return fail(kExitRuntime, b.error().message);
    bridge = std::move(*b);
    spec->net_namespace_path = bridge->netns_path();
  }
  auto sandbox = Sandbox::start(*spec, options);
  if (out[0] >= 0) {
    // Only the sandbox writes to the pipes now: EOF comes when its last process is gone.
    ::close(out[1]);
    ::close(err[1]);
  }
  if (!sandbox) return fail(kExitRuntime, sandbox.error().message);
  auto status = supervise(**sandbox, sigfd, pump);
  auto released = (*sandbox)->release();
  // Every process of the sandbox is gone: the rest of its output, up to EOF.
  (void)pump.drain();
  if (!released.ok()) {
    std::cerr << kProgram << ": releasing the sandbox: " << released.error().message << "\n";
  }
  bridge.reset();  // before _exit(): unpublish and release the address
  int code = exit_code(status, *spec);
  // Everything is released and every byte of output written: skip the libraries' exit handlers
  // (static destructors, libcgroup's and spdlog's) — the kernel frees the rest.
  std::cout.flush();
  std::cerr.flush();
  ::_exit(code);
}

}  // namespace qufop::noded
