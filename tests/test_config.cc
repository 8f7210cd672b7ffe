#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "common/config.h"
#include "common/daemon.h"

namespace qufop {
namespace {

Flags make_flags() {
  return Flags("prog", "A test program.",
               {{"listen", "HOST:PORT", "where", "127.0.0.1:7100"},
                {"data-dir", "DIR", "data", "/var/lib/qufop"},
                {"config", "FILE", "config file", ""},
                {"verbose", "", "talk more", ""},
                {"env", "K=V", "environment", "", true}});
}

TEST(Flags, DefaultsThenOverrides) {
  Flags f = make_flags();
  ASSERT_TRUE(f.parse(std::vector<std::string>{"--listen", "0.0.0.0:1", "--data-dir=/x"}));
  EXPECT_EQ(f.get("listen"), "0.0.0.0:1");
  EXPECT_EQ(f.get("data-dir"), "/x");
  EXPECT_FALSE(f.get_bool("verbose"));
  EXPECT_FALSE(f.given("verbose"));
}

TEST(Flags, BooleanAndRepeatableAndPositional) {
  Flags f = make_flags();
  ASSERT_TRUE(f.parse(std::vector<std::string>{"--verbose", "--env", "A=1", "run", "--env=B=2",
                                               "--", "--not-a-flag"}));
  EXPECT_TRUE(f.get_bool("verbose"));
  EXPECT_EQ(f.get_all("env"), (std::vector<std::string>{"A=1", "B=2"}));
  EXPECT_EQ(f.positional(), (std::vector<std::string>{"run", "--not-a-flag"}));
}

TEST(Flags, UnknownFlagIsAClearError) {
  Flags f = make_flags();
  auto r = f.parse(std::vector<std::string>{"--bogus"});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "unknown flag '--bogus' (see --help)");
  Flags g = make_flags();
  EXPECT_FALSE(g.parse(std::vector<std::string>{"-x"}));
}

TEST(Flags, MissingValue) {
  Flags f = make_flags();
  auto r = f.parse(std::vector<std::string>{"--listen"});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("needs a value HOST:PORT"), std::string::npos);
  Flags g = make_flags();
  EXPECT_FALSE(g.parse(std::vector<std::string>{"--verbose=yes"}));
}

TEST(Flags, HelpStopsAndUsageListsFlags) {
  Flags f = make_flags();
  ASSERT_TRUE(f.parse(std::vector<std::string>{"--help", "--bogus"}));
  EXPECT_TRUE(f.help_requested());
  std::string u = f.usage();
  EXPECT_NE(u.find("--data-dir DIR"), std::string::npos);
  EXPECT_NE(u.find("(default 127.0.0.1:7100)"), std::string::npos);
}

class ConfigFile : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/qufop-config-test-XXXXXX";
    int fd = mkstemp(tmpl);
    ASSERT_GE(fd, 0);
    close(fd);
    path_ = tmpl;
  }
  void TearDown() override { std::remove(path_.c_str()); }
  void write(const std::string& text) { std::ofstream(path_) << text; }
  std::string path_;
};

TEST_F(ConfigFile, FileSuppliesValuesAndFlagsOverride) {
  write(
      "# comment\nlisten = 10.0.0.1:9\n\ndata-dir = \"/srv/q # not a comment\"\nverbose = true\n");
  Flags f = make_flags();
  ASSERT_TRUE(f.parse(std::vector<std::string>{"--listen", "1.2.3.4:5", "--config", path_}));
  EXPECT_EQ(f.get("listen"), "1.2.3.4:5");  // the flag wins, wherever it stands
  EXPECT_EQ(f.get("data-dir"), "/srv/q # not a comment");
  EXPECT_TRUE(f.get_bool("verbose"));
}

TEST_F(ConfigFile, UnknownKeyNamesTheFile) {
  write("listen = 1.2.3.4:5\nlisen = x\n");
  Flags f = make_flags();
  auto r = f.parse(std::vector<std::string>{"--config", path_});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, path_ + ": unknown key 'lisen' (see --help for the keys)");
}

TEST_F(ConfigFile, MalformedLineNamesFileAndLine) {
  write("listen = 1.2.3.4:5\nthis is not config\n");
  Flags f = make_flags();
  auto r = f.parse(std::vector<std::string>{"--config", path_});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find(path_ + ":2: expected 'key = value'"), std::string::npos);
}

TEST(ConfigFileMissing, SaysWhichFile) {
  Flags f = make_flags();
  auto r = f.parse(std::vector<std::string>{"--config", "/nonexistent/qufop.conf"});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "open config /nonexistent/qufop.conf: No such file or directory");
}

TEST(ConfigText, Errors) {
  EXPECT_FALSE(parse_config_text("Key = 1\n", "f"));
  EXPECT_FALSE(parse_config_text("= 1\n", "f"));
  EXPECT_FALSE(parse_config_text("k = \"unterminated\n", "f"));
  auto ok = parse_config_text("a = 1\r\nb=2 # two\n", "f");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->at("a"), "1");
  EXPECT_EQ(ok->at("b"), "2");
}

TEST(HostPort, Parses) {
  auto a = parse_host_port("127.0.0.1:7100");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 7100);
  auto b = parse_host_port("[::1]:80");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->host, "::1");
  EXPECT_EQ(b->str(), "[::1]:80");
  auto c = parse_host_port(":9");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->host, "0.0.0.0");
  EXPECT_FALSE(parse_host_port("nohost"));
  EXPECT_FALSE(parse_host_port("h:65536"));
  EXPECT_FALSE(parse_host_port("h:-1"));
  EXPECT_FALSE(parse_host_port("::1:80"));
  EXPECT_FALSE(parse_host_port("h:0", false));
  EXPECT_TRUE(parse_host_port("h:0", true));
}

TEST(Durations, Parse) {
  EXPECT_EQ(*parse_duration_ms("10s"), 10000);
  EXPECT_EQ(*parse_duration_ms("250ms"), 250);
  EXPECT_EQ(*parse_duration_ms("2m"), 120000);
  EXPECT_EQ(*parse_duration_ms("3"), 3000);
  EXPECT_FALSE(parse_duration_ms("-1s"));
  EXPECT_FALSE(parse_duration_ms("1d"));
  EXPECT_FALSE(parse_duration_ms(""));
  EXPECT_FALSE(parse_duration_ms("99999999999999999h"));
}

TEST(Bytes, Parse) {
  EXPECT_EQ(*parse_bytes("64m"), 64ull << 20);
  EXPECT_EQ(*parse_bytes("1g"), 1ull << 30);
  EXPECT_EQ(*parse_bytes("512"), 512u);
  EXPECT_FALSE(parse_bytes("-1"));
  EXPECT_FALSE(parse_bytes("1t"));
  EXPECT_FALSE(parse_bytes("99999999999999999999g"));
}

TEST(DaemonCommandLine, ValidatesCommonFlags) {
  DaemonInfo info{"testd", "qufop-testd", "test", "127.0.0.1:7999"};
  const char* bad_listen[] = {"qufop-testd", "--listen", "nope"};
  auto r = parse_daemon_command_line(info, {}, 3, bad_listen);
  ASSERT_TRUE(std::holds_alternative<int>(r));
  EXPECT_EQ(std::get<int>(r), 2);
  const char* relative[] = {"qufop-testd", "--data-dir", "relative/dir"};
  EXPECT_EQ(std::get<int>(parse_daemon_command_line(info, {}, 3, relative)), 2);
  const char* level[] = {"qufop-testd", "--log-level", "loud"};
  EXPECT_EQ(std::get<int>(parse_daemon_command_line(info, {}, 3, level)), 2);
  const char* help[] = {"qufop-testd", "--help"};
  testing::internal::CaptureStdout();
  EXPECT_EQ(std::get<int>(parse_daemon_command_line(info, {}, 2, help)), 0);
  EXPECT_NE(testing::internal::GetCapturedStdout().find("--listen HOST:PORT"), std::string::npos);
  const char* good[] = {"qufop-testd", "--data-dir", "/tmp/x/", "--log-level", "warn"};
  auto g = parse_daemon_command_line(info, {}, 5, good);
  ASSERT_TRUE(std::holds_alternative<DaemonOptions>(g));
  EXPECT_EQ(std::get<DaemonOptions>(g).state_dir(), "/tmp/x/testd");
  EXPECT_EQ(std::get<DaemonOptions>(g).listen.port, 7999);
}

}  // namespace
}  // namespace qufop
