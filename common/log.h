// Logging: spdlog with levels. Call sites include spdlog directly; this sets it up.
#pragma once

#include <string_view>

#include "common/result.h"

namespace qufop::log {

// Levels: trace, debug, info, warn, error, off. Logs go to stderr with the component name.
Result<void> init(std::string_view component, std::string_view level);

}  // namespace qufop::log
