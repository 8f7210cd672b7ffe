// Secrets and unique ids: random bytes from the kernel (getrandom), as hex.
#pragma once

#include <cstddef>
#include <string>

#include "common/result.h"

namespace qufop {

// `bytes` random bytes as 2*bytes lowercase hex characters.
Result<std::string> random_hex(size_t bytes);

}  // namespace qufop
