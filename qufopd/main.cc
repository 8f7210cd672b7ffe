// qufopd: the whole cluster on one host (supervisor.h).
#include <cstdio>

#include "common/daemon.h"
#include "qufopd/supervisor.h"

int main(int argc, char** argv) {
  qufop::Flags flags("qufopd",
                     "The all-in-one qufop cluster: keeper, scheduler, builder, gate and one "
                     "node daemon, on one host.",
                     qufop::qufopd::flags());
  if (auto r = flags.parse(argc, argv); !r) {
    return qufop::report_fatal("qufopd", r.error().message + " (see --help)", 2);
  }
  if (flags.help_requested()) {
    std::fputs(flags.usage().c_str(), stdout);
    return 0;
  }
  auto options = qufop::qufopd::options_from_flags(flags);
  if (!options) return qufop::report_fatal("qufopd", options.error().message, 2);
  return qufop::qufopd::run(*options);
}
