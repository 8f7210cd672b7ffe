// Every daemon binary, for real: flags, config, /healthz, /metrics, SIGTERM, bad input.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "common/http_client.h"
#include "tests/process.h"

namespace qufop {
namespace {

using namespace std::chrono_literals;
using test::Process;

const std::vector<std::string> kDaemons = {"keeper", "scheduler", "noded", "builder", "gate"};

std::string binary(const std::string& daemon) {
  return std::string(QUFOP_BINARY_DIR) + "/" + daemon + "/qufop-" + daemon;
}

int exit_code(std::optional<int> status) {
  if (!status) return -1;
  return WIFEXITED(*status) ? WEXITSTATUS(*status) : 128 + WTERMSIG(*status);
}

// Polls /healthz until it answers 200 or the daemon dies.
bool wait_healthy(Process& p, uint16_t port) {
  for (int i = 0; i < 500; ++i) {
    http::Client c("127.0.0.1", port, {200ms, 1000ms});
    auto r = c.get("/healthz");
    if (r && r->status == 200) return true;
    if (p.wait(10ms)) return false;
  }
  return false;
}

class DaemonTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { dir_ = test::make_temp_dir("qufop-e2e"); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_P(DaemonTest, HelpListsTheCommonFlags) {
  Process p({binary(GetParam()), "--help"});
  EXPECT_EQ(exit_code(p.wait(10s)), 0);
  std::string out = p.out();
  for (const char* flag :
       {"--listen HOST:PORT", "--data-dir DIR", "--config FILE", "--log-level"}) {
    EXPECT_NE(out.find(flag), std::string::npos) << flag;
  }
}

TEST_P(DaemonTest, ServesHealthAndMetricsAndStopsCleanlyOnSigterm) {
  uint16_t port = test::free_port();
  Process p(
      {binary(GetParam()), "--listen", "127.0.0.1:" + std::to_string(port), "--data-dir", dir_});
  ASSERT_TRUE(wait_healthy(p, port)) << p.err();
  http::Client c("127.0.0.1", port);
  auto health = c.get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->body, R"({"status":"ok"})");
  auto metrics = c.get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_NE(metrics->body.find("qufop_build_info{component=\"" + GetParam() + "\""),
            std::string::npos)
      << metrics->body;
  EXPECT_NE(metrics->body.find("qufop_http_requests_total{code=\"200\"}"), std::string::npos);
  EXPECT_TRUE(std::filesystem::is_directory(dir_ + "/" + GetParam()));
  p.signal(SIGTERM);
  EXPECT_EQ(exit_code(p.wait(10s)), 0) << p.err();
  EXPECT_NE(p.err().find("stopped"), std::string::npos);
}

TEST_P(DaemonTest, SigtermWithAnIdleKeepAliveClientStillStops) {
  uint16_t port = test::free_port();
  Process p(
      {binary(GetParam()), "--listen", "127.0.0.1:" + std::to_string(port), "--data-dir", dir_});
  ASSERT_TRUE(wait_healthy(p, port));
  http::Client idle("127.0.0.1", port);
  ASSERT_TRUE(idle.get("/healthz"));  // leaves a keep-alive connection open
  p.signal(SIGINT);
  EXPECT_EQ(exit_code(p.wait(10s)), 0);
}

TEST_P(DaemonTest, ConfigFileSetsFlagsAndFlagsOverride) {
  uint16_t file_port = test::free_port();
  std::ofstream(dir_ + "/d.conf") << "# test\nlisten = 127.0.0.1:" << file_port
                                  << "\nlog-level = debug\ndata-dir = " << dir_ << "\n";
  {
    Process p({binary(GetParam()), "--config", dir_ + "/d.conf"});
    ASSERT_TRUE(wait_healthy(p, file_port)) << p.err();
    p.signal(SIGTERM);
    EXPECT_EQ(exit_code(p.wait(10s)), 0);
  }
  uint16_t flag_port = test::free_port();
  Process p({binary(GetParam()), "--config", dir_ + "/d.conf", "--listen",
             "127.0.0.1:" + std::to_string(flag_port)});
  ASSERT_TRUE(wait_healthy(p, flag_port)) << p.err();
  p.signal(SIGTERM);
  EXPECT_EQ(exit_code(p.wait(10s)), 0);
}

// One clear line on stderr and a non-zero exit, no stack trace, no hang.
void expect_one_line_failure(Process& p, int code, const std::string& needle) {
  EXPECT_EQ(exit_code(p.wait(10s)), code);
  std::string err = p.err();
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_NE(err.find(needle), std::string::npos) << err;
}

TEST_P(DaemonTest, UnknownFlagFails) {
  Process p({binary(GetParam()), "--frobnicate"});
  expect_one_line_failure(p, 2, "qufop-" + GetParam() + ": unknown flag '--frobnicate'");
}

TEST_P(DaemonTest, MissingConfigFails) {
  Process p({binary(GetParam()), "--config", dir_ + "/absent.conf"});
  expect_one_line_failure(p, 2, "absent.conf: No such file or directory");
}

TEST_P(DaemonTest, MalformedConfigFails) {
  std::ofstream(dir_ + "/bad.conf") << "listen 127.0.0.1:1\n";
  Process p({binary(GetParam()), "--config", dir_ + "/bad.conf"});
  expect_one_line_failure(p, 2, "bad.conf:1: expected 'key = value'");
}

TEST_P(DaemonTest, PortInUseFails) {
  uint16_t port = test::free_port();
  Process first(
      {binary(GetParam()), "--listen", "127.0.0.1:" + std::to_string(port), "--data-dir", dir_});
  ASSERT_TRUE(wait_healthy(first, port));
  // Its own data dir, so that only the port is in the way (keeper also locks its data dir).
  Process second({binary(GetParam()), "--listen", "127.0.0.1:" + std::to_string(port), "--data-dir",
                  dir_ + "/second"});
  expect_one_line_failure(second, 1, "Address already in use");
}

TEST_P(DaemonTest, UnusableDataDirFails) {
  std::ofstream(dir_ + "/file") << "x";
  Process p({binary(GetParam()), "--listen", "127.0.0.1:0", "--data-dir", dir_ + "/file"});
  expect_one_line_failure(p, 1, "data dir:");
}

INSTANTIATE_TEST_SUITE_P(AllDaemons, DaemonTest, ::testing::ValuesIn(kDaemons),
                         [](const auto& info) { return info.param; });

TEST(Qufopctl, StatusReportsEachDaemon) {
  std::string dir = test::make_temp_dir("qufop-e2e");
  std::vector<std::unique_ptr<Process>> daemons;
  std::vector<std::string> args = {std::string(QUFOP_BINARY_DIR) + "/cli/qufopctl", "status"};
  for (const auto& d : kDaemons) {
    uint16_t port = test::free_port();
    daemons.push_back(std::make_unique<Process>(std::vector<std::string>{
        binary(d), "--listen", "127.0.0.1:" + std::to_string(port), "--data-dir", dir}));
    ASSERT_TRUE(wait_healthy(*daemons.back(), port));
    args.push_back("--" + d);
    args.push_back("127.0.0.1:" + std::to_string(port));
  }
  {
    Process ctl(args);
    EXPECT_EQ(exit_code(ctl.wait(10s)), 0) << ctl.err();
    std::string out = ctl.out();
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 5) << out;
    EXPECT_EQ(out.find("down"), std::string::npos);
  }
  daemons.back()->signal(SIGTERM);  // the gate goes away: status says so and fails
  daemons.back()->wait(10s);
  args.push_back("--json");
  Process ctl(args);
  EXPECT_EQ(exit_code(ctl.wait(10s)), 1);
  EXPECT_NE(ctl.out().find("\"daemon\":\"qufop-gate\""), std::string::npos);
  EXPECT_NE(ctl.out().find("connection refused"), std::string::npos) << ctl.out();
  std::filesystem::remove_all(dir);
}

TEST(Qufopctl, UsageErrors) {
  Process none({std::string(QUFOP_BINARY_DIR) + "/cli/qufopctl"});
  EXPECT_EQ(exit_code(none.wait(10s)), 2);
  Process bad({std::string(QUFOP_BINARY_DIR) + "/cli/qufopctl", "frob"});
  EXPECT_EQ(exit_code(bad.wait(10s)), 2);
  EXPECT_NE(bad.err().find("unknown command 'frob'"), std::string::npos);
  Process ver({std::string(QUFOP_BINARY_DIR) + "/cli/qufopctl", "version"});
  EXPECT_EQ(exit_code(ver.wait(10s)), 0);
  EXPECT_EQ(ver.out().rfind("qufopctl ", 0), 0u);
}

}  // namespace
}  // namespace qufop
