#include "common/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace qufop::log {

Result<void> init(std::string_view component, std::string_view level) {
  auto lvl = spdlog::level::from_str(std::string(level));
  // from_str answers "off" for anything it does not know; only "off" itself may mean off.
  if (lvl == spdlog::level::off && level != "off") {
    return Error::invalid("log level '" + std::string(level) +
                          "': expected trace, debug, info, warn, error or off");
  }
  auto logger = spdlog::stderr_color_mt(std::string(component));
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ %n: %v");
  logger->set_level(lvl);
  spdlog::set_default_logger(logger);
  return ok();
}

}  // namespace qufop::log
