// qufopctl's subcommands: one file each, registered in commands.cc's table.
#pragma once

#include <string>
#include <vector>

namespace qufop::cli {

// Exit codes of every subcommand.
inline constexpr int kOk = 0;
inline constexpr int kFailed = 1;
inline constexpr int kUsage = 2;

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const std::vector<std::string>& args);
};

const std::vector<Command>& commands();
// Dispatches argv to a subcommand; prints usage for none or an unknown one.
int run(int argc, const char* const* argv);

int cmd_build(const std::vector<std::string>& args);
int cmd_image(const std::vector<std::string>& args);
int cmd_info(const std::vector<std::string>& args);
int cmd_instances(const std::vector<std::string>& args);
int cmd_list(const std::vector<std::string>& args);
int cmd_login(const std::vector<std::string>& args);
int cmd_logs(const std::vector<std::string>& args);
int cmd_nodes(const std::vector<std::string>& args);
int cmd_reg(const std::vector<std::string>& args);
int cmd_resize(const std::vector<std::string>& args);
int cmd_status(const std::vector<std::string>& args);
int cmd_unreg(const std::vector<std::string>& args);
int cmd_upgrade(const std::vector<std::string>& args);
int cmd_use(const std::vector<std::string>& args);
int cmd_user(const std::vector<std::string>& args);
int cmd_ver(const std::vector<std::string>& args);
int cmd_version(const std::vector<std::string>& args);
int cmd_whoami(const std::vector<std::string>& args);

}  // namespace qufop::cli
