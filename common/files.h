// Small file helpers shared by components (state files, /proc and /sys text).
#pragma once

#include <string>

#include "common/result.h"

namespace qufop {

// The whole file; Error::sys("open(PATH)") with code not_found when it does not exist.
Result<std::string> read_text_file(const std::string& path);

}  // namespace qufop
