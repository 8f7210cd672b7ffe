#include "tests/keeper_backends.h"

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "common/http_client.h"

namespace qufop::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kEtcd = "/usr/bin/etcd";
constexpr const char* kSetpriv = "/usr/bin/setpriv";
constexpr auto kStartTimeout = 30s;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs argv with its output in `log`: a pipe that nobody drains would block a chatty daemon.
// The daemon dies with the test process (parent-death signal), so a crashed test leaves no
// backend running.
std::unique_ptr<Process> spawn(std::vector<std::string> argv, const std::string& log) {
  std::vector<std::string> args = {"/bin/sh", "-c", "log=$1; shift; exec \"$@\" >\"$log\" 2>&1",
                                   "sh", log};
  if (access(kSetpriv, X_OK) == 0) args.insert(args.end(), {kSetpriv, "--pdeathsig", "KILL"});
  args.insert(args.end(), argv.begin(), argv.end());
  return std::make_unique<Process>(args);
}

// Polls `ready` until it holds, the process exits, or time runs out.
Result<void> wait_ready(Process& p, const std::function<bool()>& ready, const std::string& what,
                        const std::string& log) {
  auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (ready()) return ok();
    if (p.wait(50ms)) return Error::io(what + " exited while starting:\n" + read_file(log));
  }
  return Error{"timeout", what + " did not answer within 30 s:\n" + read_file(log), 0};
}

bool answers(uint16_t port, std::string_view method, std::string_view target) {
  http::Client c("127.0.0.1", port, {200ms, 1000ms});
  auto r = method == "GET" ? c.get(target) : c.post(target, R"({"key":"AA=="})");
  return r && r->status == 200;
}

uint16_t another_free_port(uint16_t not_this) {
  while (true) {
    uint16_t p = free_port();
    if (p != not_this) return p;
  }
}

Result<std::unique_ptr<Backend>> start(std::string name, std::string dir,
                                       std::vector<std::string> argv, uint16_t port,
                                       const std::function<bool()>& ready) {
  std::string log = dir + "/" + name + ".log";
  auto process = spawn(std::move(argv), log);
  auto up = wait_ready(*process, ready, name, log);
  auto backend = std::make_unique<Backend>(name, dir, port, std::move(process));
  if (!up) return up.error();  // backend's destructor stops it and removes the dir
  return backend;
}

}  // namespace

Backend::Backend(std::string name, std::string dir, uint16_t port, std::unique_ptr<Process> p)
    : name_(std::move(name)), dir_(std::move(dir)), port_(port), process_(std::move(p)) {}

Backend::~Backend() {
  process_->signal(SIGTERM);
  process_->wait(10s);
  process_.reset();  // SIGKILLs it if SIGTERM was not enough
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string Backend::log_tail() const {
  std::string log = read_file(dir_ + "/" + name_ + ".log");
  return log.size() > 4000 ? log.substr(log.size() - 4000) : log;
}

Result<std::unique_ptr<Backend>> start_etcd() {
  if (access(kEtcd, X_OK) != 0) {
    return Error{"not_found",
                 std::string(kEtcd) + " is not installed (apt-get install etcd-server)", 0};
  }
  std::string dir = make_temp_dir("qufop-etcd");
  uint16_t port = free_port();
  std::string client = "http://127.0.0.1:" + std::to_string(port);
  std::string peer = "http://127.0.0.1:" + std::to_string(another_free_port(port));
  std::vector<std::string> argv = {
      kEtcd, "--name", "default", "--data-dir", dir + "/data", "--listen-client-urls", client,
      "--advertise-client-urls", client, "--listen-peer-urls", peer,
      "--initial-advertise-peer-urls", peer, "--initial-cluster", "default=" + peer,
      "--initial-cluster-state", "new", "--logger", "zap", "--log-level", "warn",
      // keeper refuses values over 1 MiB; etcd's default request limit is 1.5 MiB.
      "--max-request-bytes", "1048576"};
  return start("etcd", dir, argv, port, [port] { return answers(port, "POST", "/v3/kv/range"); });
}

Result<std::unique_ptr<Backend>> start_keeper() {
  std::string binary = std::string(QUFOP_BINARY_DIR) + "/keeper/qufop-keeper";
  if (access(binary.c_str(), X_OK) != 0) {
    return Error{"not_found", binary + " is not built (ninja qufop-keeper)", 0};
  }
  std::string dir = make_temp_dir("qufop-keeper");
  uint16_t port = free_port();
  std::vector<std::string> argv = {binary, "--listen", "127.0.0.1:" + std::to_string(port),
                                   "--data-dir", dir};
  return start("keeper", dir, argv, port, [port] { return answers(port, "GET", "/healthz"); });
}

Result<std::unique_ptr<Backend>> start_backend(std::string_view name) {
  if (name == "etcd") return start_etcd();
  if (name == "keeper") return start_keeper();
  return Error::invalid("unknown backend '" + std::string(name) + "'");
}

}  // namespace qufop::test
