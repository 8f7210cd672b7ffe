// qufopctl: the command line. Subcommands live in cli/cmd_*.cc.
#include "cli/command.h"

int main(int argc, char** argv) { return qufop::cli::run(argc, argv); }
