// qufopctl's pieces without daemons: argument parsing and usage errors, config precedence and
// the file login writes, name checks, the tar writer (read back by tar(1)), tables, and request
// signing; plus the commands end to end against an in-process HTTP server that verifies every
// signature with auth::Verifier (the scheduler's own check), so signing, uploading and
// streaming are exercised over a real socket.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "cli/args.h"
#include "cli/client.h"
#include "cli/command.h"
#include "cli/stream.h"
#include "cli/table.h"
#include "cli/tar.h"
#include "common/auth.h"
#include "common/http_server.h"

namespace qufop::cli {
namespace {

namespace fs = std::filesystem;

std::string temp_dir() {
  std::string t = "/tmp/qufop-cli-test.XXXXXX";
  if (::mkdtemp(t.data()) == nullptr) std::abort();
  return t;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

struct Run {
  int rc;
  std::string out, err;
};

Run run_cli(std::vector<std::string> args) {
  args.insert(args.begin(), "qufopctl");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  int rc = run(static_cast<int>(argv.size()), argv.data());
  std::fflush(stdout);
  std::fflush(stderr);
  Run r{rc, testing::internal::GetCapturedStdout(), testing::internal::GetCapturedStderr()};
  return r;
}

size_t lines(const std::string& s) {
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

// Every test gets a fresh HOME and no $QUFOP_CONFIG, so nothing of the machine's leaks in.
class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    home_ = temp_dir();
    ::setenv("HOME", home_.c_str(), 1);
    ::unsetenv("QUFOP_CONFIG");
  }
  void TearDown() override { fs::remove_all(home_); }
  std::string home_;
};

// ---- arguments ----

TEST(CliArgs, ShortLongAndInlineForms) {
  Args a("reg", "NAME", "x",
         {{"mode", 'm', "MODE", ""}, {"desc", 0, "TEXT", ""}, {"json", 0, "", ""}}, 1, 1);
  ASSERT_TRUE(a.parse({"ufop-demo", "-m", "2", "--desc=hello world", "--json"}));
  EXPECT_EQ(a.get("mode"), "2");
  EXPECT_EQ(a.get("desc"), "hello world");
  EXPECT_TRUE(a.has("json"));
  EXPECT_EQ(a.positional(), std::vector<std::string>{"ufop-demo"});
  Args b("reg", "NAME", "x", {{"mode", 'm', "MODE", ""}}, 1, 1);
  ASSERT_TRUE(b.parse({"--mode", "1", "--", "-name"}));
  EXPECT_EQ(b.positional(), std::vector<std::string>{"-name"});
}

TEST(CliArgs, ErrorsNameTheArgument) {
  auto parse = [](std::vector<std::string> v) {
    Args a("reg", "NAME", "x", {{"mode", 'm', "MODE", ""}, {"json", 0, "", ""}}, 1, 1);
    auto r = a.parse(v);
    return r ? std::string("ok") : r.error().message;
  };
  EXPECT_EQ(parse({"n", "-x"}), "unknown flag '-x'");
  EXPECT_EQ(parse({"n", "--bogus=1"}), "unknown flag '--bogus'");
  EXPECT_EQ(parse({"n", "-m"}), "flag '-m' needs a value MODE");
  EXPECT_EQ(parse({"n", "--json=yes"}), "flag '--json' takes no value");
  EXPECT_EQ(parse({}), "missing arguments: expected NAME");
  EXPECT_EQ(parse({"a", "b"}), "unexpected argument 'b'");
}

TEST_F(CliTest, UsageErrorsExitTwoWithOneLine) {
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"nosuchcommand"},
      {"reg"},
      {"reg", "ufop-demo"},
      {"reg", "ufop-demo", "-m", "7"},
      {"reg", "ufop-demo", "-m", "2", "extra"},
      {"build", "ufop-demo"},
      {"resize", "ufop-demo", "-n", "many"},
      {"resize", "ufop-demo", "-n", "-1"},
      {"upgrade", "ufop-demo", "-v", "2"},
      {"upgrade", "ufop-demo", "-r", "1", "--all", "-v", "2"},
      {"upgrade", "ufop-demo", "--all", "-v", "0"},
      {"logs", "ufop-demo", "--tail", "x"},
      {"login", "--access-key", "ak"},
      {"user", "add", "bob", "--class", "gold"},
      {"user"},
      {"image"},
      {"list", "--unknown"},
      {"version", "x"},
  };
  for (const auto& c : cases) {
    auto r = run_cli(c);
    std::string shown;
    for (const auto& a : c) shown += a + " ";
    EXPECT_EQ(r.rc, kUsage) << shown << r.err;
    if (!c.empty()) {
      EXPECT_EQ(lines(r.err), 1u) << shown << r.err;
    }
    EXPECT_EQ(r.out, "") << shown;
  }
}

TEST_F(CliTest, HelpExitsZero) {
  auto r = run_cli({"build", "--help"});
  EXPECT_EQ(r.rc, kOk);
  EXPECT_NE(r.out.find("usage: qufopctl build NAME -d DIR"), std::string::npos) << r.out;
  r = run_cli({"--help"});
  EXPECT_EQ(r.rc, kOk);
  for (const char* c : {"login", "reg", "unreg", "build", "ver", "resize", "upgrade", "info",
                        "list", "instances", "logs", "nodes", "use", "image", "user", "status"}) {
    EXPECT_NE(r.out.find(std::string("  ") + c + " "), std::string::npos) << c;
  }
}

TEST_F(CliTest, CommonFlagsMayComeBeforeTheCommand) {
  // `qufopctl --config FILE nodes` reads FILE just like `qufopctl nodes --config FILE`.
  for (auto args :
       std::vector<std::vector<std::string>>{{"--config", "/nonexistent/qf.conf", "nodes"},
                                             {"--config=/nonexistent/qf.conf", "--json", "list"},
                                             {"nodes", "--config", "/nonexistent/qf.conf"}}) {
    auto r = run_cli(args);
    EXPECT_EQ(r.rc, kFailed) << r.err;
    EXPECT_NE(r.err.find("/nonexistent/qf.conf"), std::string::npos) << r.err;
    EXPECT_EQ(lines(r.err), 1u) << r.err;
  }
  auto alone = run_cli({"--config", "/nonexistent/qf.conf"});
  EXPECT_EQ(alone.rc, kUsage);
}

TEST_F(CliTest, NamesAreCheckedBeforeAnyRequest) {
  // No server and no keys: a bad name must fail on its own, with exit 2.
  for (std::string bad :
       {"abc", "UPPER-case", "has space", "a-name-that-is-far-too-long", "dots.in.name"}) {
    for (std::string cmd : {"reg", "unreg", "info", "ver", "instances", "use"}) {
      std::vector<std::string> args = {cmd, bad};
      if (cmd == "reg") args.insert(args.end(), {"-m", "2"});
      auto r = run_cli(args);
      EXPECT_EQ(r.rc, kUsage) << cmd << " " << bad;
      EXPECT_NE(r.err.find("UFOP name '" + bad + "'"), std::string::npos) << r.err;
    }
  }
}

TEST_F(CliTest, MissingKeysSayHowToLogIn) {
  auto r = run_cli({"list"});
  EXPECT_EQ(r.rc, kFailed);
  EXPECT_NE(r.err.find("qufopctl login"), std::string::npos) << r.err;
}

TEST_F(CliTest, BuildChecksTheDirectoryFirst) {
  auto r = run_cli({"build", "ufop-demo", "-d", home_ + "/missing"});
  EXPECT_EQ(r.rc, kFailed);
  EXPECT_EQ(r.err, "qufopctl: " + home_ + "/missing: no such directory\n");
  r = run_cli({"build", "ufop-demo", "-d", home_});
  EXPECT_EQ(r.rc, kFailed);
  EXPECT_NE(r.err.find("has no ufop.yaml"), std::string::npos) << r.err;
  EXPECT_EQ(lines(r.err), 1u);
}

TEST_F(CliTest, ServerClosingWithoutAnswerIsOneLine) {
  // A listener that takes the connection, reads a little and hangs up.
  int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(lfd, 4), 0);
  socklen_t len = sizeof a;
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  std::string address = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  std::thread hangup([lfd] {
    for (int i = 0; i < 2; ++i) {
      int c = ::accept(lfd, nullptr, nullptr);
      if (c < 0) return;
      char buf[256];
      (void)::read(c, buf, sizeof buf);
      ::close(c);
    }
  });
  std::string dir = home_ + "/demo";
  fs::create_directories(dir);
  write_file(dir + "/ufop.yaml", "image: busybox\n");
  auto build = run_cli({"build", "ufop-demo", "-d", dir, "--scheduler", address, "--access-key",
                        "a", "--secret-key", "b"});
  auto list = run_cli({"list", "--scheduler", address, "--access-key", "a", "--secret-key", "b"});
  hangup.join();
  ::close(lfd);
  for (const auto& r : {build, list}) {
    EXPECT_EQ(r.rc, kFailed);
    EXPECT_EQ(lines(r.err), 1u) << r.err;
    EXPECT_EQ(r.err.rfind("qufopctl: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(address), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("cannot reach"), std::string::npos) << r.err;
  }
}

// ---- config ----

TEST(CliConfig, LocationPrecedence) {
  auto a = config_location("/x/flag", "/x/env", "/home/u");
  EXPECT_EQ(a->path, "/x/flag");
  EXPECT_TRUE(a->required);
  auto b = config_location("", "/x/env", "/home/u");
  EXPECT_EQ(b->path, "/x/env");
  EXPECT_TRUE(b->required);
  auto c = config_location("", nullptr, "/home/u");
  EXPECT_EQ(c->path, "/home/u/.qufop/config");
  EXPECT_FALSE(c->required);
  auto d = config_location("", "", "/home/u");
  EXPECT_EQ(d->path, "/home/u/.qufop/config");
  EXPECT_FALSE(config_location("", nullptr, nullptr));
}

TEST(CliConfig, ParseRefusesUnknownKeysWithLine) {
  auto ok = parse_client_config("scheduler = 10.0.0.1:7200\naccess_key = AK # c\n", "f");
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->scheduler, "10.0.0.1:7200");
  EXPECT_EQ(ok->access_key, "AK");
  EXPECT_EQ(ok->gate, kDefaultGate);
  auto bad = parse_client_config("scheduler = a:1\nschedular = b:2\n", "cfg");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("cfg: unknown key 'schedular'"), std::string::npos);
}

TEST_F(CliTest, FlagBeatsEnvBeatsHome) {
  fs::create_directories(home_ + "/.qufop");
  write_file(home_ + "/.qufop/config",
             "scheduler = 127.0.0.1:1\naccess_key = home\nsecret_key = s\n");
  write_file(home_ + "/env.conf", "scheduler = 127.0.0.1:2\naccess_key = env\nsecret_key = s\n");
  write_file(home_ + "/flag.conf", "scheduler = 127.0.0.1:3\naccess_key = flag\nsecret_key = s\n");
  // Which file was read shows in the address an (unreachable) request was sent to.
  auto r = run_cli({"list"});
  EXPECT_EQ(r.err, "qufopctl: cannot reach the scheduler at 127.0.0.1:1: connection refused\n");
  ::setenv("QUFOP_CONFIG", (home_ + "/env.conf").c_str(), 1);
  r = run_cli({"list"});
  EXPECT_EQ(r.err, "qufopctl: cannot reach the scheduler at 127.0.0.1:2: connection refused\n");
  r = run_cli({"list", "--config", home_ + "/flag.conf"});
  EXPECT_EQ(r.err, "qufopctl: cannot reach the scheduler at 127.0.0.1:3: connection refused\n");
  r = run_cli({"list", "--config", home_ + "/flag.conf", "--scheduler", "127.0.0.1:4"});
  EXPECT_EQ(r.err, "qufopctl: cannot reach the scheduler at 127.0.0.1:4: connection refused\n");
  EXPECT_EQ(r.rc, kFailed);
  // A named file that is missing is an error, not a silent fallback.
  r = run_cli({"list", "--config", home_ + "/nope.conf"});
  EXPECT_EQ(r.rc, kFailed);
  EXPECT_NE(r.err.find("nope.conf"), std::string::npos) << r.err;
  // The secret key never shows in an error.
  EXPECT_EQ(r.err.find("secret"), std::string::npos);
}

TEST_F(CliTest, WriteConfigMode0600InA0700Directory) {
  ::umask(022);
  ClientConfig c;
  c.scheduler = "127.0.0.1:7200";
  c.gate = "127.0.0.1:7500";
  c.access_key = "AK1";
  c.secret_key = "S#K 1";
  std::string path = home_ + "/.qufop/config";
  ASSERT_TRUE(write_client_config(path, c));
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((home_ + "/.qufop").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  auto back = load_client_config({path, true});
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->secret_key, "S#K 1");
  EXPECT_EQ(back->access_key, "AK1");
  EXPECT_EQ(back->gate, "127.0.0.1:7500");
}

// ---- signing ----

TEST(CliSigning, HeadersPresentAndVerifiable) {
  auto now = std::chrono::system_clock::now();
  auto req = sign_request("AK", "SK", "127.0.0.1:7200", "POST", "/v1/ufops?x=1", "application/json",
                          R"({"name":"ufop-demo"})", now, random_nonce());
  EXPECT_EQ(req.path, "/v1/ufops");
  EXPECT_EQ(req.query, "x=1");
  EXPECT_EQ(req.header("X-Qiniu-Date"), auth::format_qiniu_date(now));
  EXPECT_EQ(req.header("X-Qiniu-Nonce").size(), 16u);
  EXPECT_EQ(req.header("Content-Type"), "application/json");
  ASSERT_EQ(req.header("Authorization").rfind("Qiniu AK:", 0), 0u);
  auth::Verifier v([](std::string_view ak) -> std::optional<std::string> {
    if (ak == "AK") return "SK";
    return std::nullopt;
  });
  auto as_signable = [](const http::Request& r) {
    return auth::SignableRequest{
        r.method,  r.path, r.query, "127.0.0.1:7200", std::string(r.header("Content-Type")),
        r.headers, r.body};
  };
  auto ok = v.verify(req.header("Authorization"), as_signable(req), now);
  ASSERT_TRUE(ok) << ok.error().message;
  // The JSON body is signed: a changed body fails.
  auto tampered = req;
  tampered.body = R"({"name":"ufop-evil"})";
  EXPECT_FALSE(v.verify(req.header("Authorization"), as_signable(tampered), now));
  // Each request gets its own nonce, hence its own signature.
  EXPECT_NE(random_nonce(), random_nonce());
}

// ---- tar ----

TEST_F(CliTest, TarWriterReadsBackWithTar) {
  std::string src = home_ + "/src";
  std::string deep = src + "/" + std::string(60, 'd') + "/" + std::string(60, 'e');
  fs::create_directories(deep);
  fs::create_directories(src + "/empty");
  write_file(src + "/ufop.yaml", "image: busybox\n");
  write_file(src + "/run.sh", "#!/bin/sh\necho hi\n");
  ::chmod((src + "/run.sh").c_str(), 0755);
  std::string big(70000, 'x');
  for (size_t i = 0; i < big.size(); i += 7) big[i] = static_cast<char>('a' + i % 26);
  write_file(deep + "/data.bin", big);
  write_file(src + "/zero", "");
  fs::create_symlink("run.sh", src + "/link");
  fs::create_symlink(std::string(120, 'l'), src + "/longlink");

  auto archive = tar_directory(src);
  ASSERT_TRUE(archive) << archive.error().message;
  EXPECT_EQ(archive->size() % 512, 0u);
  write_file(home_ + "/a.tar", *archive);
  std::string out = home_ + "/out";
  fs::create_directories(out);
  ASSERT_EQ(std::system(("tar -xf " + home_ + "/a.tar -C " + out).c_str()), 0);
  EXPECT_EQ(read_file(out + "/ufop.yaml"), "image: busybox\n");
  EXPECT_EQ(read_file(out + "/run.sh"), "#!/bin/sh\necho hi\n");
  EXPECT_EQ(fs::status(out + "/run.sh").permissions() & fs::perms::owner_exec,
            fs::perms::owner_exec);
  std::string deep_out = out + deep.substr(src.size());
  EXPECT_EQ(read_file(deep_out + "/data.bin"), big);
  EXPECT_TRUE(fs::is_directory(out + "/empty"));
  EXPECT_EQ(fs::file_size(out + "/zero"), 0u);
  EXPECT_EQ(fs::read_symlink(out + "/link"), "run.sh");
  EXPECT_EQ(fs::read_symlink(out + "/longlink"), std::string(120, 'l'));

  // Sorted entries: the same tree gives the same listing.
  FILE* p = ::popen(("tar -tf " + home_ + "/a.tar").c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string listing;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) listing.append(buf, n);
  ::pclose(p);
  EXPECT_EQ(listing.rfind(std::string(60, 'd') + "/\n", 0), 0u) << listing;
  EXPECT_NE(listing.find("\nufop.yaml\n"), std::string::npos) << listing;
  EXPECT_LT(listing.find("link\n"), listing.find("run.sh\n"));
}

TEST_F(CliTest, TarWriterRefusesFifos) {
  std::string src = home_ + "/src";
  fs::create_directories(src);
  ASSERT_EQ(::mkfifo((src + "/pipe").c_str(), 0644), 0);
  auto archive = tar_directory(src);
  ASSERT_FALSE(archive);
  EXPECT_NE(archive.error().message.find(src + "/pipe: not a file"), std::string::npos);
}

// ---- tables and formats ----

TEST(CliTable, AlignsColumnsAndDashesEmptyCells) {
  Table t({"ID", "STATE", "VERSION"});
  t.add({"ufop-demo-1a2b3c4d", "running", "2"});
  t.add({"x", "", "10"});
  t.add({"y"});
  EXPECT_EQ(t.render(),
            "ID                  STATE    VERSION\n"
            "ufop-demo-1a2b3c4d  running  2\n"
            "x                   -        10\n"
            "y                   -        -\n");
}

TEST(CliTable, Formats) {
  EXPECT_EQ(format_age(0, 5000), "-");
  EXPECT_EQ(format_age(1000, 43'000), "42s");
  EXPECT_EQ(format_age(1, 1 + 7 * 60'000), "7m");
  EXPECT_EQ(format_age(1, 1 + 3 * 3'600'000), "3h");
  EXPECT_EQ(format_age(1, 1 + 5 * 86'400'000LL), "5d");
  EXPECT_EQ(format_bytes(512), "512B");
  EXPECT_EQ(format_bytes(64LL << 20), "64.0MiB");
  EXPECT_EQ(format_cpu(500), "0.5");
  EXPECT_EQ(format_cpu(2000), "2");
  EXPECT_EQ(format_cpu(1250), "1.25");
}

TEST(CliChunks, DecodesAcrossArbitrarySplits) {
  std::string raw = "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n";
  for (size_t step = 1; step <= raw.size(); ++step) {
    ChunkDecoder d;
    std::string out;
    for (size_t i = 0; i < raw.size(); i += step) {
      ASSERT_TRUE(d.feed(std::string_view(raw).substr(i, step), [&](std::string_view s) {
        out.append(s);
        return true;
      }));
    }
    EXPECT_TRUE(d.done());
    EXPECT_EQ(out, "hello, world") << step;
  }
  ChunkDecoder bad;
  EXPECT_FALSE(bad.feed("zz\r\n", [](std::string_view) { return true; }));
}

// ---- commands against a signature-checking server ----

// Answers the few routes the tests call, after checking each request's signature exactly as
// the scheduler does (auth::Verifier) and refusing a nonce seen before.
class CliSignedServer : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    server_ = std::make_unique<http::Server>(ioc_, http::ServerOptions{});
    server_->route_prefix("GET", "/v1/", [this](http::Request r, http::Responder res) {
      handle(std::move(r), std::move(res));
    });
    server_->route_prefix("POST", "/v1/", [this](http::Request r, http::Responder res) {
      handle(std::move(r), std::move(res));
    });
    auto bound = server_->listen({"127.0.0.1", 0});
    ASSERT_TRUE(bound) << bound.error().message;
    address_ = bound->str();
    thread_ = std::thread([this] { ioc_.run(); });
  }
  void TearDown() override {
    server_->stop();
    work_.reset();
    ioc_.stop();
    thread_.join();
    CliTest::TearDown();
  }

  void handle(http::Request r, http::Responder res) {
    auth::Verifier v([](std::string_view ak) -> std::optional<std::string> {
      if (ak == "AK-test") return "SK-test";
      return std::nullopt;
    });
    auth::SignableRequest s{r.method,
                            r.path,
                            r.query,
                            std::string(r.header("Host")),
                            std::string(r.header("Content-Type")),
                            r.headers,
                            r.body};
    auto who = v.verify(r.header("Authorization"), s, std::chrono::system_clock::now());
    {
      std::lock_guard lock(mu_);
      paths_.push_back(r.method + " " + r.target);
      if (who && !nonces_.insert(std::string(r.header("X-Qiniu-Nonce"))).second) {
        who = Error{"unauthorized", "replayed nonce", 0};
      }
      last_body_ = r.body;
    }
    if (!who) return res.send(http::Response::error(401, "unauthorized", who.error().message));
    if (r.path == "/v1/whoami") {
      return res.send({200,
                       "application/json",
                       {},
                       R"({"name":"alice","access_key":"AK-test","class":"paid","admin":false})"});
    }
    if (r.path == "/v1/ufops/ufop-demo/build") {
      // The upload must be a tar holding ufop.yaml.
      bool has_yaml = r.body.size() >= 1024 && r.body.compare(0, 9, "ufop.yaml") == 0;
      res.start_stream(200, "text/plain");
      res.write("step 1/2: cp\n");
      res.write("step 2/2: ch");
      res.write("mod\n");
      res.write(has_yaml ? R"({"version":3,"digest":"sha256:abc"})"
                         : R"({"error":"invalid_argument","message":"no ufop.yaml"})");
      res.write("\n");
      return res.finish();
    }
    if (r.path == "/v1/ufops/ufop-demo/logs") {
      return res.send(http::Response::error(404, "not_found", "no instance 'zz'"));
    }
    res.send(http::Response::error(404, "not_found", "no route " + r.path));
  }

  std::vector<std::string> creds() {
    return {"--scheduler", address_, "--access-key", "AK-test", "--secret-key", "SK-test"};
  }

  boost::asio::io_context ioc_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_{
      ioc_.get_executor()};
  std::unique_ptr<http::Server> server_;
  std::thread thread_;
  std::string address_;
  std::mutex mu_;
  std::vector<std::string> paths_;
  std::set<std::string> nonces_;
  std::string last_body_;
};

TEST_F(CliSignedServer, LoginChecksKeysThenWritesConfig0600) {
  auto r = run_cli({"login", "--scheduler", address_, "--gate", "127.0.0.1:7501", "--access-key",
                    "AK-test", "--secret-key", "wrong"});
  EXPECT_EQ(r.rc, kFailed);
  EXPECT_EQ(lines(r.err), 1u) << r.err;
  EXPECT_EQ(r.err.find("wrong"), std::string::npos) << "secret printed: " << r.err;
  EXPECT_FALSE(fs::exists(home_ + "/.qufop/config"));

  r = run_cli({"login", "--scheduler", address_, "--gate", "127.0.0.1:7501", "--access-key",
               "AK-test", "--secret-key", "SK-test"});
  ASSERT_EQ(r.rc, kOk) << r.err;
  EXPECT_NE(r.out.find("as alice (paid)"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("SK-test"), std::string::npos);
  struct stat st {};
  ASSERT_EQ(::stat((home_ + "/.qufop/config").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto c = load_client_config({home_ + "/.qufop/config", true});
  ASSERT_TRUE(c);
  EXPECT_EQ(c->scheduler, address_);
  EXPECT_EQ(c->gate, "127.0.0.1:7501");
  EXPECT_EQ(c->secret_key, "SK-test");

  // The written config is what later commands use.
  r = run_cli({"whoami", "--json"});
  ASSERT_EQ(r.rc, kOk) << r.err;
  auto v = json::parse(r.out);
  ASSERT_TRUE(v) << r.out;
  EXPECT_EQ(v->as_object().at("name").as_string(), "alice");
}

TEST_F(CliSignedServer, BuildUploadsATarAndStreamsTheLog) {
  std::string dir = home_ + "/demo";
  fs::create_directories(dir);
  write_file(dir + "/ufop.yaml", "image: busybox\nrun: /app/x\n");
  auto args = creds();
  args.insert(args.begin(), {"build", "ufop-demo", "-d", dir});
  auto r = run_cli(args);
  ASSERT_EQ(r.rc, kOk) << r.err;
  EXPECT_EQ(r.out, "step 1/2: cp\nstep 2/2: chmod\nversion 3 (sha256:abc)\n");
  // Not a terminal here: one plain line instead of a progress bar.
  EXPECT_NE(r.err.find("uploaded 2048 bytes"), std::string::npos) << r.err;
  EXPECT_EQ(last_body_.size(), 2048u);
}

TEST_F(CliSignedServer, ErrorsAreOneLineAndSignaturesNeverRepeat) {
  auto args = creds();
  args.insert(args.begin(), {"logs", "ufop-demo", "-i", "zz"});
  auto r = run_cli(args);
  EXPECT_EQ(r.rc, kFailed);
  EXPECT_EQ(r.err, "qufopctl: no instance 'zz'\n");
  EXPECT_EQ(r.out, "");
  for (int i = 0; i < 3; ++i) {
    auto w = creds();
    w.insert(w.begin(), "whoami");
    EXPECT_EQ(run_cli(w).rc, kOk);
  }
  std::lock_guard lock(mu_);
  EXPECT_EQ(nonces_.size(), 4u);
  EXPECT_EQ(paths_.back(), "GET /v1/whoami");
  EXPECT_EQ(paths_.front(), "GET /v1/ufops/ufop-demo/logs?instance=zz");
}

}  // namespace
}  // namespace qufop::cli
