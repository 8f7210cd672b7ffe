// The README's two set-up commands are the ones CI runs and the scripts exist.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

namespace {

std::string read_file(const std::string& rel) {
  std::ifstream in(std::string(QUFOP_SOURCE_DIR) + "/" + rel);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The commands in the first ```sh block under the "## Set up" heading, comments stripped.
std::vector<std::string> readme_commands() {
  std::string readme = read_file("README.md");
  auto section = readme.find("\n## Set up");
  if (section == std::string::npos) return {};
  auto start = readme.find("```sh\n", section);
  auto end = readme.find("```", start + 6);
  if (start == std::string::npos || end == std::string::npos) return {};
  std::istringstream block(readme.substr(start + 6, end - start - 6));
  std::vector<std::string> out;
  for (std::string line; std::getline(block, line);) {
    line = line.substr(0, line.find('#'));
    while (!line.empty() && line.back() == ' ') line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

std::string without_sudo(std::string cmd) {
  return cmd.rfind("sudo ", 0) == 0 ? cmd.substr(5) : cmd;
}

TEST(Repo, ReadmeHasExactlyTwoSetupCommands) {
  auto cmds = readme_commands();
  ASSERT_EQ(cmds.size(), 2u) << "README.md '## Set up' must hold one ```sh block of two commands";
}

TEST(Repo, CiRunsTheReadmesTestCommand) {
  auto cmds = readme_commands();
  ASSERT_EQ(cmds.size(), 2u);
  std::string ci = read_file(".ci/run");
  EXPECT_NE(ci.find(without_sudo(cmds[1])), std::string::npos)
      << ".ci/run does not call the README's test command: " << cmds[1];
}

TEST(Repo, ReadmeCommandsAreExecutableScripts) {
  for (const auto& cmd : readme_commands()) {
    std::string script = without_sudo(cmd);
    script = script.substr(0, script.find(' '));
    struct stat st;
    ASSERT_EQ(stat((std::string(QUFOP_SOURCE_DIR) + "/" + script).c_str(), &st), 0) << script;
    EXPECT_TRUE(st.st_mode & S_IXUSR) << script << " is not executable";
  }
}

}  // namespace
