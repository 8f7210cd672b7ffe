// The sandbox as noded runs it: in-process Sandbox::start -> wait -> release of /bin/true, N times,
// with the same spec as `qufop-noded run --net none` (cgroup, overlay, seccomp default profile,
// dropped capabilities). No process start, no library initialisation per sandbox: what remains
// is the sandbox itself. Prints "inprocess <median> <p99> <mean>" in ms; with `idle`, starts one
// sandbox running `sleep` and prints "rss_init <KiB>" for its qufop-init, the only process noded
// keeps per sandbox.
//
//   qufop_sandbox_bench ROOTFS RUN_DIR_BASE SECCOMP_CACHE INIT N
//   qufop_sandbox_bench ROOTFS RUN_DIR_BASE SECCOMP_CACHE INIT idle
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "noded/cgroup.h"
#include "noded/sandbox.h"
#include "noded/seccomp.h"

namespace {

using namespace qufop::noded;

int fail(const std::string& what) {
  std::fprintf(stderr, "qufop_sandbox_bench: %s\n", what.c_str());
  return 1;
}

long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    return fail("usage: qufop_sandbox_bench ROOTFS RUN_DIR_BASE SECCOMP_CACHE INIT N|idle");
  }
  std::string rootfs = argv[1], base = argv[2], cache = argv[3], init = argv[4], what = argv[5];
  auto program = load_or_build_default_profile(cache);
  if (!program) return fail(program.error().message);
  auto cgroups = make_cgroup_manager();
  if (!cgroups) return fail(cgroups.error().message);
  int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  auto spec_for = [&](int i, std::vector<std::string> argv) {
    SandboxSpec s;
    s.id = "qf-bench-" + std::to_string(::getpid()) + "-" + std::to_string(i);
    s.layers = {rootfs};
    s.run_dir = base + "/" + s.id;
    s.argv = std::move(argv);
    return s;
  };
  StartOptions options;
  options.cgroups = cgroups->get();
  options.seccomp = &*program;
  options.init_path = init;
  options.stdout_fd = null;
  options.stderr_fd = null;

  if (what == "idle") {
    auto sb = Sandbox::start(spec_for(0, {"/bin/sleep", "100"}), options);
    if (!sb) return fail(sb.error().message);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::printf("rss_init %ld\n", rss_kib((*sb)->init_pid()));
    auto r = (*sb)->release();
    return r.ok() ? 0 : fail(r.error().message);
  }
  int n = std::stoi(what);
  std::vector<double> ms;
  for (int i = 0; i < n + 3; ++i) {  // 3 warm-up rounds
    auto t0 = std::chrono::steady_clock::now();
    auto sb = Sandbox::start(spec_for(i, {"/bin/true"}), options);
    if (!sb) return fail(sb.error().message);
    auto st = (*sb)->wait(std::nullopt);
    if (!st || !st->has_value() || (*st)->shell_code() != 0) return fail("/bin/true failed");
    if (auto r = (*sb)->release(); !r.ok()) return fail(r.error().message);
    double t =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (i >= 3) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  double sum = 0;
  for (double t : ms) sum += t;
  std::printf("inprocess %.2f %.2f %.2f\n", ms[ms.size() / 2],
              ms[std::min(ms.size() - 1, ms.size() * 99 / 100)], sum / ms.size());
  return 0;
}
