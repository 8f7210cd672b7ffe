// The upload of `qufopctl build`: a directory as a POSIX ustar archive (with pax records for
// paths or link targets over 100 bytes), written here in a few dozen lines instead of linking
// libarchive into the statically linked qufopctl.
#pragma once

#include <string>

#include "common/result.h"

namespace qufop::cli {

// Archives the tree under `dir` (not `dir` itself): directories, regular files (mode kept,
// owners 0), and symlinks as they are; entries in sorted order, so the same tree gives the same
// bytes apart from times. Device files, fifos and sockets are refused, naming the entry.
Result<std::string> tar_directory(const std::string& dir);

}  // namespace qufop::cli
