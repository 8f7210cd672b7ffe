// Helpers of the builder's end-to-end tests: the busybox base tarball, tools, leftovers.
#pragma once

#include <string>
#include <vector>

namespace qufop::builder::buildtest {

// scripts/make-busybox-tar's tarball, made once per process (removed at exit); "" with the
// reason in *why when it cannot be made.
const std::string& busybox_tar(std::string* why);
// QUFOP_BINARY_DIR/rel.
std::string binary(const std::string& rel);
// The tool is on PATH.
bool have(const std::string& tool);
// The command's stdout.
std::string capture(const std::string& command);
// Mounts at or below `dir`, qufop cgroups named qf-build-*, child processes of this one.
std::vector<std::string> leftovers(const std::string& dir);

}  // namespace qufop::builder::buildtest
