#include "noded/instance_runtime.h"

#include <thread>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "common/daemon.h"
#include "common/http_client.h"
#include "noded/mounts.h"
#include "noded/output_log.h"
#include "noded/stop_wait.h"

namespace qufop::noded {

namespace {

constexpr std::chrono::milliseconds kProbeTimeout{1000};

// A TCP connect to ip:port within the timeout.
bool tcp_connects(const std::string& ip, int port, std::chrono::milliseconds timeout) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, ip.c_str(), &sa.sin_addr) != 1) return false;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  bool connected = false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
    connected = true;
  } else if (errno == EINPROGRESS) {
    pollfd pfd{fd, POLLOUT, 0};
    if (::poll(&pfd, 1, static_cast<int>(timeout.count())) == 1) {
      int err = 0;
      socklen_t len = sizeof err;
      connected = ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
    }
  }
  ::close(fd);
  return connected;
}

std::string image_key(const api::InstanceSpec& s) {
  return s.registry + "/" + s.image + ":" + s.reference;
}

}  // namespace

SandboxRuntime::SandboxRuntime(RuntimeOptions options, builder::OciStore store)
    : options_(std::move(options)), store_(std::move(store)) {}

SandboxRuntime::~SandboxRuntime() = default;

Result<std::unique_ptr<SandboxRuntime>> SandboxRuntime::open(
    const RuntimeOptions& options, const netfilter::NetworkConfig& network) {
  for (const char* sub : {"/instances", "/run", "/logs", "/net", "/seccomp"}) {
    QF_TRY(make_dirs(options.state_dir + sub, 0700));
  }
  auto store = builder::OciStore::open(options.state_dir + "/images");
  if (!store) return store.error().wrap("image store");
  std::unique_ptr<SandboxRuntime> rt(new SandboxRuntime(options, std::move(*store)));
  if (rt->options_.init_path.empty()) rt->options_.init_path = default_init_path();
  if (::access(rt->options_.init_path.c_str(), X_OK) != 0) {
    return Error::invalid("qufop-init not found at " + rt->options_.init_path);
  }
  rt->puller_ = std::make_unique<builder::Puller>(rt->store_, options.state_dir + "/layers");
  auto cgroups = make_cgroup_manager();
  if (!cgroups) return cgroups.error();
  rt->cgroups_ = std::move(*cgroups);
  auto prog = load_or_build_default_profile(options.state_dir + "/seccomp");
  if (!prog) return prog.error().wrap("seccomp profile");
  rt->seccomp_ = std::move(*prog);
  auto net = netfilter::NodeNetwork::open(network);
  if (!net) return net.error().wrap("node network");
  rt->net_ = std::move(*net);
  if (auto r = rt->net_->setup_node(); !r) return r.error().wrap("node network");
  return rt;
}

StartOptions SandboxRuntime::start_options() const {
  StartOptions o;
  o.cgroups = cgroups_.get();
  o.seccomp = seccomp_ ? &*seccomp_ : nullptr;
  o.init_path = options_.init_path;
  o.kill_with_parent = false;  // instances outlive a noded restart
  return o;
}

std::string SandboxRuntime::run_dir(const std::string& sandbox_id) const {
  return options_.state_dir + "/run/" + sandbox_id;
}
std::string SandboxRuntime::log_dir(const std::string& id) const {
  return options_.state_dir + "/logs/" + id;
}
std::string SandboxRuntime::log_path(const std::string& id) const {
  return log_dir(id) + "/output.log";
}
int64_t SandboxRuntime::host_ports() const {
  const auto& r = net_->settings().host_ports;
  return static_cast<int64_t>(r.last) - r.first + 1;
}

std::shared_ptr<SandboxRuntime::Live> SandboxRuntime::find(const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = live_.find(id);
  return it == live_.end() ? nullptr : it->second;
}

// The same image for many instances at once: the first caller pulls, the others wait for its
// result. A failed pull is not remembered, so the next assignment tries again.
Result<builder::PulledImage> SandboxRuntime::pull(const api::InstanceSpec& spec) {
  std::string key = image_key(spec);
  std::promise<Result<builder::PulledImage>> promise;
  std::shared_future<Result<builder::PulledImage>> future;
  bool mine = false;
  {
    std::lock_guard lock(pulls_mu_);
    auto it = pulls_.find(key);
    if (it != pulls_.end()) {
      future = it->second;
    } else {
      future = promise.get_future().share();
      pulls_.emplace(key, future);
      mine = true;
    }
  }
  if (!mine) return future.get();
  auto registry = parse_host_port(spec.registry, false);
  Result<builder::PulledImage> result = Error::invalid("");
  if (!registry) {
    result = Error::invalid("registry '" + spec.registry + "': " + registry.error().message);
  } else {
    std::lock_guard lock(pull_mu_);
    result = puller_->pull(*registry, spec.image, spec.reference);
    if (!result) {
      result = result.error().wrap("pulling " + spec.image + ":" + spec.reference + " from " +
                                   spec.registry);
    }
  }
  if (!result) {
    std::lock_guard lock(pulls_mu_);
    pulls_.erase(key);
  }
  promise.set_value(result);
  return result;
}

Result<SandboxSpec> SandboxRuntime::sandbox_spec(const api::Assignment& a,
                                                 const builder::PulledImage& image) {
  const api::InstanceSpec& in = a.spec;
  SandboxSpec s;
  s.id = "qf-" + a.id;
  s.layers = image.layer_dirs;
  s.run_dir = run_dir(s.id);
  s.argv = in.argv;
  if (s.argv.empty()) {
    s.argv = image.config.entrypoint;
    s.argv.insert(s.argv.end(), image.config.cmd.begin(), image.config.cmd.end());
  }
  if (s.argv.empty()) {
    return Error::invalid("no command: the assignment has no argv and the image " + in.image + ":" +
                          in.reference + " no entrypoint or cmd");
  }
  s.env = image.config.env;
  s.env.insert(s.env.end(), in.env.begin(), in.env.end());
  s.env.push_back("PORT=" + std::to_string(in.port));
  s.workdir = image.config.working_dir.empty() ? "/" : image.config.working_dir;
  s.limits.cpus = static_cast<double>(in.cpu_millis) / 1000.0;
  s.limits.memory_bytes = static_cast<uint64_t>(std::max<int64_t>(0, in.memory_bytes));
  s.limits.pids = in.pids;
  s.readonly_root = in.readonly;
  s.stop_wait = std::chrono::milliseconds(in.stop_wait_ms);
  s.log_dir = log_dir(a.id);
  s.log_max_bytes = options_.log_max_bytes;
  s.log_keep = options_.log_keep;
  s.cgroup_parent = options_.cgroup_parent;
  s.net = NetMode::kNamespace;
  s.net_namespace_path = "/proc/self/fd/0";  // replaced by the real one once it exists
  if (in.port <= 0 || in.port > 65535) {
    return Error::invalid("port " + std::to_string(in.port) + ": expected 1-65535");
  }
  QF_TRY(validate(s));
  return s;
}

Result<StartedInstance> SandboxRuntime::start(const api::Assignment& a) {
  if (find(a.id)) return Error{"already_exists", "instance " + a.id + " runs already", 0};
  auto image = pull(a.spec);
  if (!image) return image.error();
  auto spec = sandbox_spec(a, *image);
  if (!spec) return spec.error().wrap("instance " + a.id);
  Rollback rollback("starting instance " + a.id);
  auto log_fd = open_output_log(spec->log_dir);
  if (!log_fd) return log_fd.error();
  // The sandbox has its own copies once started; ours close at the end either way.
  struct Fds {
    int log, netns = -1;
    ~Fds() {
      ::close(log);
      if (netns >= 0) ::close(netns);
    }
  } fds{*log_fd};
  auto netns = netfilter::create_netns();
  if (!netns) return netns.error().wrap("instance " + a.id);
  fds.netns = *netns;
  // The network before the process: the command finds eth0 up when it starts.
  auto att = net_->attach(a.id, netfilter::NetnsRef::from_fd(*netns),
                          static_cast<uint16_t>(a.spec.port), 0);
  if (!att) return att.error().wrap("instance " + a.id + ": network");
  rollback.add("network", [this, id = a.id] { return net_->detach(id); });
  spec->net_namespace_path = "/proc/self/fd/" + std::to_string(*netns);
  StartOptions opts = start_options();
  opts.stdout_fd = *log_fd;
  opts.stderr_fd = *log_fd;
  auto sb = Sandbox::start(*spec, opts);
  if (!sb) return sb.error().wrap("instance " + a.id);
  Sandbox* raw = sb->get();
  rollback.add("sandbox", [raw] { return raw->release(); });
  auto live = std::make_shared<Live>();
  InstanceFile& f = live->file;
  f.assignment = a;
  f.sandbox_id = spec->id;
  f.init_pid = raw->init_pid();
  auto stat = read_proc_stat(f.init_pid);
  if (!stat) return stat.error().wrap("instance " + a.id + ": pid 1");
  f.init_start_time = stat->start_time;
  f.run_dir = spec->run_dir;
  f.cgroup_parent = spec->cgroup_parent;
  f.layers = spec->layers;
  f.log_dir = spec->log_dir;
  f.ip = att->ip.str();
  f.host_port = att->host_port;
  // The record before we call it started: a crash from here on leaves an adoptable instance.
  if (auto r = write_instance_file(instances_dir(), f); !r) {
    return r.error().wrap("instance " + a.id + ": record");
  }
  rollback.commit();
  live->sandbox = std::move(*sb);
  {
    std::lock_guard lock(mu_);
    live_[a.id] = live;
  }
  return StartedInstance{f.ip, f.host_port};
}

bool SandboxRuntime::probe(const std::string& id, const api::InstanceSpec& spec) {
  auto live = find(id);
  if (!live) return false;
  const std::string& ip = live->file.ip;
  if (spec.health.empty()) return tcp_connects(ip, spec.port, kProbeTimeout);
  http::ClientOptions o;
  o.connect_timeout = kProbeTimeout;
  o.request_timeout = kProbeTimeout;
  o.max_body_bytes = 64u << 10;
  http::Client client(ip, static_cast<uint16_t>(spec.port), o);
  std::string path = spec.health[0] == '/' ? spec.health : "/" + spec.health;
  auto r = client.get(path);
  return r.ok() && r->status >= 200 && r->status < 300;
}

void SandboxRuntime::release(const std::string& id, Live& live) {
  if (auto r = live.sandbox->release(); !r) {
    spdlog::error("instance {}: releasing the sandbox: {}", id, r.error().message);
  }
  if (auto r = net_->detach(id); !r) {
    spdlog::error("instance {}: detaching the network: {}", id, r.error().message);
  }
  if (auto r = remove_instance_file(instances_dir(), id); !r) {
    spdlog::error("instance {}: {}", id, r.error().message);
  }
  std::lock_guard lock(mu_);
  live_.erase(id);
}

namespace {

ExitInfo exit_info(const std::optional<ExitStatus>& st, bool adopted) {
  if (!st || st->code == -1 || adopted) {
    return {-1, "exit status unknown (adopted after a noded restart)"};
  }
  return {st->shell_code(), st->describe()};
}

}  // namespace

std::optional<ExitInfo> SandboxRuntime::exited(const std::string& id) {
  auto live = find(id);
  if (!live) return ExitInfo{-1, "not running on this node"};
  pollfd pfd{live->sandbox->pidfd(), POLLIN, 0};
  if (pfd.fd >= 0 && ::poll(&pfd, 1, 0) == 0) return std::nullopt;
  auto st = live->sandbox->wait(std::chrono::milliseconds(0));
  std::optional<ExitStatus> status = st.ok() ? *st : std::nullopt;
  ExitInfo info = exit_info(status, live->adopted);
  release(id, *live);
  return info;
}

Result<ExitInfo> SandboxRuntime::stop(const std::string& id, std::chrono::milliseconds wait) {
  auto live = find(id);
  if (!live) return ExitInfo{-1, "not running on this node"};
  auto stopped = stop_wait(*live->sandbox, wait);
  ExitInfo info;
  if (stopped) {
    info = exit_info(stopped->status, live->adopted);
    info.message =
        "stopped: " + info.message + (stopped->killed ? " (SIGKILL after stop_wait)" : "");
  }
  release(id, *live);
  if (!stopped) return stopped.error();
  return info;
}

void SandboxRuntime::forget(const std::string& id) {
  if (find(id)) return;  // still running (never: the agent forgets only what is over)
  if (auto r = remove_tree(log_dir(id)); !r) {
    spdlog::warn("instance {}: removing its logs: {}", id, r.error().message);
  }
}

void SandboxRuntime::rotate_logs(const std::vector<std::string>& ids) {
  for (const auto& id : ids) {
    auto r = rotate_if_larger(log_path(id), options_.log_max_bytes, options_.log_keep);
    if (!r) spdlog::warn("instance {}: rotating its log: {}", id, r.error().message);
  }
}

void SandboxRuntime::clean_dead(const InstanceFile& f) {
  if (auto cg = cgroups_->open(f.cgroup_parent, f.sandbox_id); cg.ok()) {
    if (auto r = (*cg)->kill_all(std::chrono::seconds(10)); !r) {
      spdlog::warn("instance {}: {}", f.assignment.id, r.error().message);
    }
    for (int i = 0; i < 100; ++i) {
      auto r = (*cg)->remove();
      if (r.ok() || r.error().sys_errno != EBUSY) break;
      ::usleep(10'000);
    }
    cgroups_->prune(f.cgroup_parent);
  }
  if (auto r = unmount_under(f.run_dir); !r) spdlog::warn("{}", r.error().message);
  if (auto r = remove_tree(f.run_dir); !r) spdlog::warn("{}", r.error().message);
  (void)remove_instance_file(instances_dir(), f.assignment.id);
}

std::vector<AdoptedInstance> SandboxRuntime::restore() {
  std::vector<AdoptedInstance> out;
  std::vector<std::string> live_ids;
  auto files = read_instance_files(instances_dir());
  if (!files) {
    spdlog::error("live restore: {}", files.error().message);
    files = InstanceFiles{};
  }
  for (const auto& bad : files->bad) spdlog::error("live restore: skipping {}", bad);
  for (const auto& f : files->files) {
    SandboxSpec s;
    s.id = f.sandbox_id;
    s.layers = f.layers;
    s.run_dir = f.run_dir;
    s.log_dir = f.log_dir;
    s.cgroup_parent = f.cgroup_parent;
    s.stop_wait = std::chrono::milliseconds(f.assignment.spec.stop_wait_ms);
    AdoptedInstance a;
    a.assignment = f.assignment;
    a.started = {f.ip, f.host_port};
    if (same_process(f.init_pid, f.init_start_time)) {
      auto sb = Sandbox::adopt(s, f.init_pid, start_options());
      // Checked again with the pidfd held: the pid cannot be reused behind our back now.
      if (sb && same_process(f.init_pid, f.init_start_time)) {
        auto live = std::make_shared<Live>();
        live->sandbox = std::move(*sb);
        live->file = f;
        live->adopted = true;
        {
          std::lock_guard lock(mu_);
          live_[f.assignment.id] = live;
        }
        live_ids.push_back(f.assignment.id);
        spdlog::info("instance {}: adopted (pid {}, {}:{})", f.assignment.id, f.init_pid, f.ip,
                     f.host_port);
        out.push_back(std::move(a));
        continue;
      }
      if (!sb) spdlog::error("instance {}: {}", f.assignment.id, sb.error().message);
    }
    spdlog::info("instance {}: ended while noded was down; cleaning up", f.assignment.id);
    clean_dead(f);
    a.started.host_port = 0;
    a.exited = ExitInfo{-1, "exited while noded was down (exit status unknown)"};
    out.push_back(std::move(a));
  }
  // Run dirs of no record: a crash between the sandbox start and its record.
  if (DIR* d = ::opendir((options_.state_dir + "/run").c_str())) {
    std::vector<std::string> stray;
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == ".." || name.rfind("qf-", 0) != 0) continue;
      if (std::find(live_ids.begin(), live_ids.end(), name.substr(3)) == live_ids.end()) {
        stray.push_back(name);
      }
    }
    ::closedir(d);
    for (const auto& name : stray) {
      InstanceFile f;
      f.assignment.id = name.substr(3);
      f.sandbox_id = name;
      f.cgroup_parent = options_.cgroup_parent;
      f.run_dir = run_dir(name);
      spdlog::warn("removing stray sandbox {}", name);
      clean_dead(f);
    }
  }
  auto rec = net_->reconcile(live_ids);
  if (!rec) {
    spdlog::error("live restore: reconciling the node network: {}", rec.error().message);
  } else {
    for (const auto& id : rec->released) spdlog::info("network: released the lease of {}", id);
    for (const auto& l : rec->deleted_links) spdlog::info("network: deleted stale link {}", l);
    for (auto p : rec->port_conflicts) spdlog::warn("network: host port {} taken meanwhile", p);
  }
  return out;
}

void SandboxRuntime::stop_all() {
  std::vector<std::pair<std::string, std::chrono::milliseconds>> ids;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, live] : live_) {
      ids.emplace_back(id, std::chrono::milliseconds(live->file.assignment.spec.stop_wait_ms));
    }
  }
  std::vector<std::thread> stoppers;
  for (const auto& [id, wait] : ids) {
    stoppers.emplace_back([this, id, wait] {
      if (auto r = stop(id, wait); !r)
        spdlog::warn("instance {}: stopping: {}", id, r.error().message);
      forget(id);
    });
  }
  for (auto& t : stoppers) t.join();
  if (!ids.empty()) spdlog::info("stopped {} instances", ids.size());
}

void SandboxRuntime::shutdown() {
  std::lock_guard lock(mu_);
  if (!live_.empty()) return;  // instances keep running across a noded restart
  if (auto r = net_->teardown_node(); !r) {
    spdlog::warn("tearing down the node network: {}", r.error().message);
  }
}

}  // namespace qufop::noded
