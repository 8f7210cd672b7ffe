// qufop-scheduler: parse flags, set up logging, run.
#include <variant>

#include "scheduler/scheduler.h"

int main(int argc, char** argv) {
  namespace scheduler = qufop::scheduler;
  auto parsed = qufop::parse_daemon_command_line(scheduler::info(), scheduler::flags(), argc, argv);
  if (auto* exit_code = std::get_if<int>(&parsed)) return *exit_code;
  return scheduler::run(std::get<qufop::DaemonOptions>(parsed));
}
