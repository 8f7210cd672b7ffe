// Instance output under noded: the sandbox writes straight into <log dir>/output.log (opened
// O_APPEND and handed to it as stdout/stderr), so its output survives a noded crash and no pipe
// ties it to noded. noded caps the size from outside by copy-truncate: output.log is copied to
// output.log.1 (older files shifted, `keep` files in all) and truncated to 0; the writer's
// O_APPEND continues at the new end. Bytes written between the copy and the truncate are lost
// (the price of not owning the writer's fd; logrotate's copytruncate has the same window).
#pragma once

#include <cstdint>
#include <string>

#include "common/result.h"

namespace qufop::noded {

// Opens <dir>/output.log for appending (creating dir, one level); the fd is O_CLOEXEC.
Result<int> open_output_log(const std::string& dir);

// Rotates <path> when it is larger than max_bytes. Returns whether it rotated.
Result<bool> rotate_if_larger(const std::string& path, uint64_t max_bytes, int keep);

}  // namespace qufop::noded
