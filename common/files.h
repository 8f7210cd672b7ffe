// Small file helpers shared by components (state files, /proc and /sys text).
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace qufop {

// The whole file; Error::sys("open(PATH)") with code not_found when it does not exist.
Result<std::string> read_text_file(const std::string& path);

// write(2) until all of `data` is written; the error names `what`.
Result<void> write_all(int fd, std::string_view data, std::string_view what);

// Replaces `path` with `content` so that a crash leaves the old file or the new one, never a
// mix: a temp file beside it (mode `mode`, exactly), written, fsync'd, renamed over, and the
// directory fsync'd so the rename is durable too.
Result<void> write_file_atomic(const std::string& path, std::string_view content,
                               unsigned mode = 0600);

// fsync of a directory: what makes a rename, creation or removal in it durable.
Result<void> fsync_dir(const std::string& dir);
// fsync of the directory holding `path`.
Result<void> fsync_parent_dir(const std::string& path);

}  // namespace qufop
