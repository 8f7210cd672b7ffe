// qufop-keeper: parse flags, set up logging, run.
#include <variant>

#include "keeper/keeper.h"

int main(int argc, char** argv) {
  namespace keeper = qufop::keeper;
  auto parsed = qufop::parse_daemon_command_line(keeper::info(), keeper::flags(), argc, argv);
  if (auto* exit_code = std::get_if<int>(&parsed)) return *exit_code;
  return keeper::run(std::get<qufop::DaemonOptions>(parsed));
}
