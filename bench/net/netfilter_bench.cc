// Per-instance network setup and teardown: qufop's NodeNetwork (libnl + libnftables, in
// process) against the same steps done with iproute2/nft commands (`ip -batch`, and one command
// per step), in one run, N instances each.
//
// The whole benchmark runs in a network namespace and a mount namespace of its own (made at
// start, before any thread): the host's links and nftables are never touched, and the names the
// `ip` peers need (/run/netns/NAME) live on a private tmpfs that vanishes with the process.
// Instance namespaces are made outside the timed part, as the sandbox makes them.
//
//   qufop_netfilter_bench [INSTANCES] [DISK_STATE_DIR]
#include <fcntl.h>
#include <sched.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "netfilter/link.h"
#include "netfilter/network.h"
#include "netfilter/rules.h"

extern char** environ;

namespace qufop::netfilter {
namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "netfilter_bench: %s\n", what.c_str());
  std::exit(1);
}

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

struct Stats {
  double median = 0, p90 = 0;
};
Stats stats(std::vector<double> v) {
  if (v.empty()) return {};
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v[std::min(v.size() - 1, v.size() * 9 / 10)]};
}

// An instance namespace held by an fd; with a name under /run/netns when the `ip` peers need
// one.
struct InstanceNs {
  int fd = -1;
  std::string name;
};

InstanceNs make_netns(const std::string& name) {
  InstanceNs ns;
  auto fd = create_netns();
  if (!fd) die(fd.error().message);
  ns.fd = *fd;
  if (!name.empty()) {
    // A name for `ip -n`: bind-mount the namespace (on the benchmark's private tmpfs).
    const std::string path = "/run/netns/" + name;
    int f = ::open(path.c_str(), O_CREAT | O_RDONLY | O_CLOEXEC, 0444);
    if (f >= 0) ::close(f);
    const std::string src = "/proc/self/fd/" + std::to_string(ns.fd);
    if (::mount(src.c_str(), path.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      die("bind mount " + path + ": " + strerror(errno));
    }
  }
  ns.name = name;
  return ns;
}

void release_netns(InstanceNs& ns) {
  if (ns.fd >= 0) ::close(ns.fd);
  ns.fd = -1;
  if (!ns.name.empty()) {
    const std::string path = "/run/netns/" + ns.name;
    ::umount2(path.c_str(), MNT_DETACH);
    ::unlink(path.c_str());
    ns.name.clear();
  }
}

// Runs a command (optionally feeding stdin), waits; dies on failure.
void sh(const std::vector<std::string>& argv, const std::string& input = "") {
  int in[2] = {-1, -1};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (!input.empty()) {
    if (::pipe2(in, O_CLOEXEC) != 0) die("pipe");
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  if (posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ) != 0) die("spawn " + argv[0]);
  posix_spawn_file_actions_destroy(&fa);
  if (!input.empty()) {
    ::close(in[0]);
    if (::write(in[1], input.data(), input.size()) != static_cast<ssize_t>(input.size())) {
      die("write to " + argv[0]);
    }
    ::close(in[1]);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += a + " ";
    die("command failed: " + cmd + (input.empty() ? "" : "<<< " + input));
  }
}

struct Result2 {
  std::vector<double> setup, teardown;
  double background_ms = 0;  // until the kernel has removed the veths of released namespaces
};

std::string ip_of(int i) { return "10.88.0." + std::to_string(i + 2); }

// qufop: NodeNetwork::attach / detach.
Result2 run_ours(NodeNetwork& net, int n, LinkTeardown how, const std::string& tag) {
  Result2 r;
  std::vector<InstanceNs> ns(n);
  for (int i = 0; i < n; ++i) ns[i] = make_netns("");
  for (int i = 0; i < n; ++i) {
    auto t0 = Clock::now();
    auto a = net.attach(tag + std::to_string(i), NetnsRef::from_fd(ns[i].fd), 9100, 0);
    r.setup.push_back(ms_since(t0));
    if (!a) die("attach: " + a.error().message);
  }
  for (int i = 0; i < n; ++i) {
    auto t0 = Clock::now();
    auto d = net.detach(tag + std::to_string(i), how);
    // The sandbox lets go of the namespace: with kGoesWithNetns that is what removes the veth.
    if (how == LinkTeardown::kGoesWithNetns) release_netns(ns[i]);
    r.teardown.push_back(ms_since(t0));
    if (!d) die("detach: " + d.error().message);
  }
  if (how == LinkTeardown::kGoesWithNetns) {
    // The kernel destroys released namespaces (and their veths) in the background, in batches.
    auto links = NetlinkLinkOps::open();
    if (!links) die(links.error().message);
    auto t0 = Clock::now();
    while (true) {
      auto all = (*links)->list_links();
      if (!all) die(all.error().message);
      bool left = std::any_of(all->begin(), all->end(),
                              [](const LinkInfo& l) { return l.name.starts_with(kVethPrefix); });
      if (!left) break;
      if (ms_since(t0) > 10000) die("veths of released namespaces still there after 10 s");
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    r.background_ms = ms_since(t0);
  }
  for (auto& x : ns) release_netns(x);
  return r;
}

// iproute2 + nft, one process per step, or two `ip -batch` processes and one nft.
Result2 run_ip(int n, bool batch) {
  Result2 r;
  std::vector<InstanceNs> ns(n);
  const std::string prefix = batch ? "qfb" : "qfe";
  for (int i = 0; i < n; ++i) ns[i] = make_netns(prefix + "ns" + std::to_string(i));
  for (int i = 0; i < n; ++i) {
    const std::string link = prefix + std::to_string(i);
    const std::string name = ns[i].name;
    const std::string port = std::to_string(30000 + i);
    const std::string element =
        "add element ip qufop published { " + port + " : " + ip_of(i) + " . 9100 }\n";
    auto t0 = Clock::now();
    if (batch) {
      sh({"ip", "-batch", "-"}, "link add " + link +
                                    " mtu 1500 master qf0 up type veth peer name eth0 netns " +
                                    name + "\nlink set dev " + link + " alias qufop:" + link +
                                    " type bridge_slave isolated on\n");
      sh({"ip", "-n", name, "-batch", "-"}, "link set lo up\nlink set eth0 up\naddr add " +
                                                ip_of(i) +
                                                "/24 dev eth0\nroute add default via 10.88.0.1\n");
      sh({"nft", "-f", "-"}, element);
    } else {
      sh({"ip", "link", "add", link, "mtu", "1500", "master", "qf0", "up", "type", "veth", "peer",
          "name", "eth0", "netns", name});
      sh({"ip", "link", "set", "dev", link, "alias", "qufop:" + link, "type", "bridge_slave",
          "isolated", "on"});
      sh({"ip", "-n", name, "link", "set", "lo", "up"});
      sh({"ip", "-n", name, "link", "set", "eth0", "up"});
      sh({"ip", "-n", name, "addr", "add", ip_of(i) + "/24", "dev", "eth0"});
      sh({"ip", "-n", name, "route", "add", "default", "via", "10.88.0.1"});
      sh({"nft", "add", "element", "ip", "qufop", "published",
          "{ " + port + " : " + ip_of(i) + " . 9100 }"});
    }
    r.setup.push_back(ms_since(t0));
  }
  for (int i = 0; i < n; ++i) {
    const std::string link = prefix + std::to_string(i);
    auto t0 = Clock::now();
    sh({"nft", "delete", "element", "ip", "qufop", "published",
        "{ " + std::to_string(30000 + i) + " }"});
    sh({"ip", "link", "del", link});
    r.teardown.push_back(ms_since(t0));
  }
  for (auto& x : ns) release_netns(x);
  return r;
}

int main_impl(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 50;
  const std::string disk_dir = argc > 2 ? argv[2] : "/var/tmp";
  if (::geteuid() != 0) die("needs root (network namespaces, veth, nftables)");
  // Before any thread: a network namespace and a private mount namespace for the whole run.
  if (::unshare(CLONE_NEWNET | CLONE_NEWNS) != 0) die("unshare: " + std::string(strerror(errno)));
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) die("make / private");
  ::mkdir("/run/netns", 0755);
  if (::mount("tmpfs", "/run/netns", "tmpfs", 0, "mode=0755") != 0) die("tmpfs on /run/netns");

  char tmpl[] = "/dev/shm/qufop-netfilter-bench.XXXXXX";
  const std::string shm_dir = ::mkdtemp(tmpl);
  std::string disk_tmpl = disk_dir + "/qufop-netfilter-bench.XXXXXX";
  const std::string disk_state = ::mkdtemp(disk_tmpl.data());

  {
    auto links = NetlinkLinkOps::open();
    if (!links || !(*links)->set_up(1)) die("lo up");
  }
  NetworkConfig config;
  config.state_dir = shm_dir;
  config.allowed_node_ports = "7300";
  auto net = NodeNetwork::open(config);
  if (!net) die(net.error().message);
  if (auto r = (*net)->setup_node(); !r) die(r.error().message);

  auto goes = run_ours(**net, n, LinkTeardown::kGoesWithNetns, "a");
  auto del = run_ours(**net, n, LinkTeardown::kDelete, "b");
  // The same with the IPAM state on disk: each change pays fdatasync + a directory fsync.
  NetworkConfig disk_config = config;
  disk_config.state_dir = disk_state;
  Result2 disk;
  {
    auto dnet = NodeNetwork::open(disk_config);
    if (!dnet) die(dnet.error().message);
    if (auto r = (*dnet)->setup_node(); !r) die(r.error().message);
    disk = run_ours(**dnet, n, LinkTeardown::kGoesWithNetns, "c");
  }
  auto batch = run_ip(n, true);
  auto each = run_ip(n, false);

  if (auto r = (*net)->teardown_node(); !r) die(r.error().message);
  std::filesystem::remove_all(shm_dir);
  std::filesystem::remove_all(disk_state);

  auto row = [](const char* label, const Result2& r) {
    Stats s = stats(r.setup), t = stats(r.teardown);
    std::printf("%-52s %7.2f %7.2f   %7.2f %7.2f\n", label, s.median, s.p90, t.median, t.p90);
  };
  std::printf(
      "node network, per instance, %d instances each, ms      setup p50/p90   teardown p50/p90\n",
      n);
  row("qufop: libnl+libnftables, netns takes the veth", goes);
  row("qufop: same, explicit veth delete", del);
  row("qufop: netns takes the veth, IPAM state on disk", disk);
  row("ip -batch x2 + nft (teardown: nft + ip link del)", batch);
  row("ip/nft, one command per step (6 ip + 1 nft)", each);
  std::printf(
      "(the kernel removed the %d released namespaces' veths %.1f ms after the last "
      "teardown, in the background)\n",
      n, goes.background_ms);
  const double ours_s = stats(goes.setup).median, ours_t = stats(goes.teardown).median;
  std::printf(
      "ratios (peer / qufop, medians): setup: ip -batch %.1fx, per-command %.1fx; "
      "teardown: ip link del %.1fx (vs explicit delete %.1fx)\n",
      stats(batch.setup).median / ours_s, stats(each.setup).median / ours_s,
      stats(batch.teardown).median / ours_t,
      stats(batch.teardown).median / stats(del.teardown).median);
  std::printf("targets: setup < 3 ms: %s (%.2f); teardown < 3 ms: %s (%.2f)\n",
              ours_s < 3 ? "met" : "MISSED", ours_s, ours_t < 3 ? "met" : "MISSED", ours_t);
  std::printf(
      "raw: setup_ours=%.3f setup_batch=%.3f setup_each=%.3f teardown_ours=%.3f "
      "teardown_delete=%.3f teardown_ip=%.3f setup_disk=%.3f\n",
      ours_s, stats(batch.setup).median, stats(each.setup).median, ours_t,
      stats(del.teardown).median, stats(batch.teardown).median, stats(disk.setup).median);
  return 0;
}

}  // namespace
}  // namespace qufop::netfilter

int main(int argc, char** argv) { return qufop::netfilter::main_impl(argc, argv); }
