#include "test_builder_build_util.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace qufop::builder::buildtest {

namespace fs = std::filesystem;

namespace {
std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

const std::string& busybox_tar(std::string* why) {
  static std::string path, reason;
  static bool done = false;
  if (!done) {
    done = true;
    std::string tmpl = "/tmp/qufop-bbtar-" + std::to_string(::getpid()) + ".XXXXXX";
    if (!::mkdtemp(tmpl.data())) {
      reason = "mkdtemp failed";
    } else {
      std::string out = tmpl + "/busybox.tar";
      std::string cmd =
          std::string(QUFOP_SOURCE_DIR) + "/scripts/make-busybox-tar " + out + " >/dev/null 2>&1";
      if (std::system(cmd.c_str()) != 0) {
        reason = "scripts/make-busybox-tar failed (busybox-static installed?)";
        fs::remove_all(tmpl);
      } else {
        path = out;
        static std::string dir = tmpl;
        std::atexit([] { fs::remove_all(dir); });
      }
    }
  }
  if (why) *why = reason;
  return path;
}

std::string binary(const std::string& rel) { return std::string(QUFOP_BINARY_DIR) + "/" + rel; }

bool have(const std::string& tool) {
  return std::system(("command -v " + tool + " >/dev/null 2>&1").c_str()) == 0;
}

std::string capture(const std::string& command) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

std::vector<std::string> leftovers(const std::string& dir) {
  std::vector<std::string> found;
  std::istringstream mounts(slurp("/proc/self/mountinfo"));
  for (std::string line; std::getline(mounts, line);) {
    if (line.find(" " + dir + "/") != std::string::npos ||
        line.find(" " + dir + " ") != std::string::npos) {
      found.push_back("mount: " + line);
    }
  }
  std::error_code ec;
  std::string prefix = "qf-build-" + std::to_string(::getpid()) + "-";
  std::vector<fs::path> parents = {"/sys/fs/cgroup/qufop"};
  for (const auto& h : fs::directory_iterator("/sys/fs/cgroup", ec)) {
    parents.push_back(h.path() / "qufop");
  }
  for (const auto& parent : parents) {
    if (!fs::is_directory(parent, ec)) continue;
    for (const auto& cg : fs::directory_iterator(parent, ec)) {
      if (cg.path().filename().string().rfind(prefix, 0) == 0) {
        found.push_back("cgroup: " + cg.path().string());
      }
    }
  }
  std::string run = dir + "/state/run";
  for (const auto& e : fs::directory_iterator(run, ec))
    found.push_back("run dir: " + e.path().string());
  std::string me = std::to_string(::getpid());
  for (const auto& p : fs::directory_iterator("/proc", ec)) {
    std::string stat = slurp(p.path().string() + "/stat");
    auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    std::string state, ppid;
    rest >> state >> ppid;
    if (ppid == me) found.push_back("process: " + stat.substr(0, close + 1) + " " + state);
  }
  return found;
}

}  // namespace qufop::builder::buildtest
