// examples/ufop-demo and the real qufopctl binary: the demo's handler under the host's busybox
// nc (the same server command its ufop.yaml runs in the image), its descriptor through the
// builder's parser, and qufopctl's exit codes and one-line errors as a user sees them.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <thread>

#include <signal.h>
#include <sys/stat.h>

#include "builder/descriptor.h"
#include "common/api.h"
#include "common/http_client.h"
#include "common/json.h"
#include "tests/keeper_backends.h"
#include "tests/process.h"

namespace qufop {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

const std::string kDemo = std::string(QUFOP_SOURCE_DIR) + "/examples/ufop-demo";
const std::string kCtl = std::string(QUFOP_BINARY_DIR) + "/cli/qufopctl";

bool accepts(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// The handler under `busybox nc -ll`, as the demo's ufop.yaml runs it.
class DemoHandler : public ::testing::Test {
 protected:
  void start(const char* version_env) {
    if (::access("/usr/bin/busybox", X_OK) != 0 && ::access("/bin/busybox", X_OK) != 0) {
      GTEST_SKIP() << "busybox is not installed (apt-get install busybox-static)";
    }
    port_ = test::free_port();
    if (version_env != nullptr) ::setenv("DEMO_VERSION", version_env, 1);
    std::string busybox = ::access("/bin/busybox", X_OK) == 0 ? "/bin/busybox" : "/usr/bin/busybox";
    nc_ = std::make_unique<test::Process>(std::vector<std::string>{
        busybox, "nc", "-ll", "-p", std::to_string(port_), "-e", kDemo + "/handler.sh"});
    ::unsetenv("DEMO_VERSION");
    for (int i = 0; i < 200 && !accepts(port_); ++i) std::this_thread::sleep_for(10ms);
    ASSERT_TRUE(accepts(port_)) << nc_->err();
  }

  Result<http::Response> request(std::string method, std::string target, std::string body = "") {
    http::Client c("127.0.0.1", port_);
    http::Request r;
    r.method = std::move(method);
    r.target = std::move(target);
    if (!body.empty()) r.headers.emplace_back("Content-Type", "application/octet-stream");
    r.body = std::move(body);
    return c.send(r);
  }

  uint16_t port_ = 0;
  std::unique_ptr<test::Process> nc_;
};

TEST_F(DemoHandler, AnswersTheUfopContract) {
  start(nullptr);
  if (IsSkipped()) return;
  auto health = request("GET", "/health");
  ASSERT_TRUE(health) << health.error().message;
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->body, "ok\n");
  EXPECT_EQ(health->header("Connection"), "close");

  std::string body(100000, 'z');
  auto res =
      request("POST", "/handler?cmd=ufop-demo/resize/10x20&url=http%3A%2F%2Fsrc%2Fa.jpg", body);
  ASSERT_TRUE(res) << res.error().message;
  EXPECT_EQ(res->status, 200);
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  EXPECT_NE(res->body.find("ufop-demo version 1 on " + std::string(host) + "\n"), std::string::npos)
      << res->body;
  EXPECT_NE(res->body.find("params: resize/10x20\n"), std::string::npos) << res->body;
  EXPECT_NE(res->body.find("url: http%3A%2F%2Fsrc%2Fa.jpg\n"), std::string::npos) << res->body;
  EXPECT_NE(res->body.find("body bytes: 100000\n"), std::string::npos) << res->body;

  auto empty = request("POST", "/handler?cmd=ufop-demo");
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->status, 200);
  EXPECT_NE(empty->body.find("body bytes: 0\n"), std::string::npos) << empty->body;

  auto other = request("POST", "/handler?cmd=other/x", "abc");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 400);
  auto missing = request("GET", "/nope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  auto get_handler = request("GET", "/handler?cmd=ufop-demo/x");
  ASSERT_TRUE(get_handler);
  EXPECT_EQ(get_handler->status, 404);
}

TEST_F(DemoHandler, VersionComesFromTheEnvironmentOverTheFile) {
  start("7");
  if (IsSkipped()) return;
  auto res = request("POST", "/handler?cmd=ufop-demo/a", "x");
  ASSERT_TRUE(res) << res.error().message;
  EXPECT_NE(res->body.find("ufop-demo version 7 on "), std::string::npos) << res->body;
}

TEST(DemoDescriptor, ParsesWithTheBuildersParser) {
  auto d = builder::load_descriptor(kDemo + "/ufop.yaml");
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->image.name, "busybox");
  EXPECT_EQ(d->port, 9100);
  EXPECT_EQ(d->health, "/health");
  ASSERT_EQ(d->run.size(), 3u);
  EXPECT_EQ(d->run[0], "/bin/sh");
  EXPECT_NE(d->run[2].find("-e /app/handler.sh"), std::string::npos);
}

// ---- the real binary ----

struct Outcome {
  int rc;
  std::string out, err;
};

Outcome qufopctl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {kCtl};
  argv.insert(argv.end(), args.begin(), args.end());
  test::Process p(argv);
  auto status = p.wait(20s);
  if (!status) return {-1, p.out(), p.err()};
  return {WIFEXITED(*status) ? WEXITSTATUS(*status) : 128 + WTERMSIG(*status), p.out(), p.err()};
}

class CliBinary : public ::testing::Test {
 protected:
  void SetUp() override {
    home_ = test::make_temp_dir("qufop-cli-e2e");
    ::setenv("HOME", home_.c_str(), 1);
    ::unsetenv("QUFOP_CONFIG");
  }
  void TearDown() override { fs::remove_all(home_); }
  std::string home_;
};

TEST_F(CliBinary, UnreachableSchedulerIsOneLineAndExitOne) {
  // A port that was free a moment ago: nothing listens there.
  std::string address = "127.0.0.1:" + std::to_string(test::free_port());
  for (auto cmd : std::vector<std::vector<std::string>>{
           {"list"}, {"info", "ufop-demo"}, {"reg", "ufop-demo", "-m", "2"}, {"nodes", "--json"}}) {
    cmd.insert(cmd.end(), {"--scheduler", address, "--access-key", "AK", "--secret-key", "SK-x"});
    auto r = qufopctl(cmd);
    EXPECT_EQ(r.rc, 1) << cmd[0];
    EXPECT_EQ(r.err,
              "qufopctl: cannot reach the scheduler at " + address + ": connection refused\n");
    EXPECT_EQ(r.out, "");
  }
  // login writes nothing when the keys cannot be checked.
  auto r =
      qufopctl({"login", "--scheduler", address, "--access-key", "AK", "--secret-key", "SK-x"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.err.find("SK-x"), std::string::npos);
  EXPECT_FALSE(fs::exists(home_ + "/.qufop/config"));
}

TEST_F(CliBinary, UsageErrorsExitTwo) {
  auto r = qufopctl({"reg", "Bad Name", "-m", "2"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_EQ(r.err,
            "qufopctl reg: UFOP name 'Bad Name': only lowercase letters, digits, '-' and '_' are "
            "allowed (see qufopctl reg --help)\n");
  r = qufopctl({"frobnicate"});
  EXPECT_EQ(r.rc, 2);
  r = qufopctl({"version"});
  EXPECT_EQ(r.rc, 0);
  EXPECT_EQ(r.out.rfind("qufopctl ", 0), 0u);
}

// ---- against a real keeper and scheduler ----

class CliControlPlane : public CliBinary {
 protected:
  void SetUp() override {
    CliBinary::SetUp();
    auto keeper = test::start_keeper();
    ASSERT_TRUE(keeper.ok()) << keeper.error().message;
    keeper_ = std::move(*keeper);
    dir_ = test::make_temp_dir("qufop-cli-sched");
    port_ = test::free_port();
    address_ = "127.0.0.1:" + std::to_string(port_);
    scheduler_ = std::make_unique<test::Process>(std::vector<std::string>{
        std::string(QUFOP_BINARY_DIR) + "/scheduler/qufop-scheduler", "--listen", address_,
        "--data-dir", dir_, "--keeper", keeper_->url(), "--join-token", "cli-e2e-token",
        "--log-level", "warn"});
    // Up once unsigned requests get 401 (503 while loading) and admin.conf is written.
    for (int i = 0; i < 500; ++i) {
      http::Client client("127.0.0.1", port_, {500ms, 5000ms});
      auto r = client.get("/v1/whoami");
      if (r.ok() && r->status == 401 && fs::exists(dir_ + "/admin.conf")) return;
      std::this_thread::sleep_for(20ms);
    }
    FAIL() << "scheduler did not come up: " << scheduler_->err();
  }
  void TearDown() override {
    if (scheduler_) {
      scheduler_->signal(SIGTERM);
      EXPECT_TRUE(scheduler_->wait(10s)) << "scheduler did not stop on SIGTERM";
    }
    scheduler_.reset();
    keeper_.reset();
    fs::remove_all(dir_);
    CliBinary::TearDown();
  }

  Outcome admin(std::vector<std::string> args) {
    args.insert(args.end(), {"--config", dir_ + "/admin.conf"});
    return qufopctl(args);
  }

  // "user add" as the admin; the keys from its labelled lines.
  std::pair<std::string, std::string> add_user(const std::string& name) {
    auto r = admin({"user", "add", name});
    EXPECT_EQ(r.rc, 0) << r.err;
    std::string ak, sk;
    std::istringstream in(r.out);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("access key: ", 0) == 0) ak = line.substr(12);
      if (line.rfind("secret key: ", 0) == 0) sk = line.substr(12);
    }
    EXPECT_FALSE(ak.empty() || sk.empty()) << r.out;
    return {ak, sk};
  }

  static json::Value parse_json(const Outcome& r) {
    auto v = json::parse(r.out);
    EXPECT_TRUE(v.ok()) << "not one JSON document: " << r.out;
    return v.ok() ? *v : json::Value(nullptr);
  }

  std::unique_ptr<test::Backend> keeper_;
  std::unique_ptr<test::Process> scheduler_;
  std::string dir_, address_;
  uint16_t port_ = 0;
};

TEST_F(CliControlPlane, LoginRegListInfoUnreg) {
  auto [ak, sk] = add_user("alice");
  ASSERT_FALSE(sk.empty());

  // Wrong keys: one line, nothing written, the secret not echoed.
  auto r = qufopctl(
      {"login", "--scheduler", address_, "--access-key", ak, "--secret-key", "not-the-secret"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.find("not-the-secret"), std::string::npos);
  EXPECT_FALSE(fs::exists(home_ + "/.qufop/config"));

  r = qufopctl({"login", "--scheduler", address_, "--access-key", ak, "--secret-key", sk});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("as alice"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(sk), std::string::npos);
  struct stat st {};
  ASSERT_EQ(::stat((home_ + "/.qufop/config").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // From here on the config in ~/.qufop is used.
  r = qufopctl({"reg", "ufop-demo", "-m", "2", "--desc", "the demo"});
  ASSERT_EQ(r.rc, 0) << r.err;
  r = qufopctl({"reg", "ufop-demo", "-m", "2"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  r = qufopctl({"reg", "ufop-pub1", "-m", "0"});
  EXPECT_EQ(r.rc, 1) << "mode 0 is admin only";

  r = qufopctl({"list", "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto list = parse_json(r);
  ASSERT_TRUE(list.is_object());
  bool found = false;
  for (const auto& u : list.as_object().at("ufops").as_array()) {
    auto rec = api::ufop_from_json(u);
    ASSERT_TRUE(rec) << rec.error().message;
    found = found || (rec->name == "ufop-demo" && rec->desc == "the demo" && rec->owner == ak);
  }
  EXPECT_TRUE(found) << r.out;
  r = qufopctl({"list"});
  EXPECT_EQ(r.rc, 0);
  EXPECT_NE(r.out.find("ufop-demo  private  you"), std::string::npos) << r.out;

  r = qufopctl({"info", "ufop-demo", "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto info = api::ufop_from_json(parse_json(r));
  ASSERT_TRUE(info) << r.out;
  EXPECT_EQ(info->mode, api::UfopMode::kPrivate);
  r = qufopctl({"info", "ufop-demo"});
  EXPECT_NE(r.out.find("mode:           2 (private)"), std::string::npos) << r.out;

  for (std::vector<std::string> read : {std::vector<std::string>{"ver", "ufop-demo", "--json"},
                                        {"instances", "ufop-demo", "--json"},
                                        {"nodes", "--json"},
                                        {"whoami", "--json"}}) {
    r = qufopctl(read);
    EXPECT_EQ(r.rc, 0) << read[0] << ": " << r.err;
    EXPECT_TRUE(parse_json(r).is_object()) << read[0];
  }
  r = qufopctl({"instances", "ufop-demo"});
  EXPECT_EQ(r.rc, 0) << r.err;

  // Another user may neither see the details of nor delete a private UFOP.
  auto [bob_ak, bob_sk] = add_user("bobby");
  r = qufopctl({"unreg", "ufop-demo", "--access-key", bob_ak, "--secret-key", bob_sk});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.find(bob_sk), std::string::npos);

  r = qufopctl({"unreg", "ufop-demo"});
  EXPECT_EQ(r.rc, 0) << r.err;
  r = qufopctl({"info", "ufop-demo"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.out, "");
}

TEST_F(CliControlPlane, AdminListsUsersWithoutSecrets) {
  auto [ak, sk] = add_user("carol");
  auto r = admin({"user", "list", "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(parse_json(r).is_object());
  EXPECT_NE(r.out.find(ak), std::string::npos);
  EXPECT_EQ(r.out.find(sk), std::string::npos);
  // Only an admin adds users.
  r = qufopctl(
      {"user", "add", "mallory", "--scheduler", address_, "--access-key", ak, "--secret-key", sk});
  EXPECT_EQ(r.rc, 1);
}

}  // namespace
}  // namespace qufop
