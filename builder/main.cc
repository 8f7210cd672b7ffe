// qufop-builder: parse flags, set up logging, run (or the import, push and pull subcommands).
#include <string_view>
#include <variant>

#include "builder/builder.h"

int main(int argc, char** argv) {
  namespace builder = qufop::builder;
  std::string_view sub = argc > 1 ? argv[1] : "";
  if (sub == "import") return builder::import_main(argc - 1, argv + 1);
  if (sub == "push") return builder::push_main(argc - 1, argv + 1);
  if (sub == "pull") return builder::pull_main(argc - 1, argv + 1);
  auto parsed = qufop::parse_daemon_command_line(builder::info(), builder::flags(), argc, argv);
  if (auto* exit_code = std::get_if<int>(&parsed)) return *exit_code;
  return builder::run(std::get<qufop::DaemonOptions>(parsed));
}
