// qufop-gate: parse flags, set up logging, run.
#include <variant>

#include "gate/gate.h"

int main(int argc, char** argv) {
  namespace gate = qufop::gate;
  auto parsed = qufop::parse_daemon_command_line(gate::info(), gate::flags(), argc, argv);
  if (auto* exit_code = std::get_if<int>(&parsed)) return *exit_code;
  return gate::run(std::get<qufop::DaemonOptions>(parsed));
}
