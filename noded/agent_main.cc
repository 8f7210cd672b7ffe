// qufop-noded-agent: the node daemon (exec'd by qufop-noded, see main.cc).
#include <variant>

#include "noded/noded.h"

int main(int argc, char** argv) {
  namespace noded = qufop::noded;
  auto parsed = qufop::parse_daemon_command_line(noded::info(), noded::flags(), argc, argv);
  if (auto* exit_code = std::get_if<int>(&parsed)) return *exit_code;
  return noded::run(std::get<qufop::DaemonOptions>(parsed));
}
