// qufop-builder: Builds UFOP descriptors into OCI images and serves them to nodes.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"
#include "common/daemon.h"

namespace qufop::builder {

const DaemonInfo& info();
// The flags of qufop-builder beyond the common ones.
std::vector<FlagSpec> flags();
// Serves until SIGTERM/SIGINT; returns the exit code.
int run(const DaemonOptions& options);

// DATA_DIR/builder/images: the OCI layout holding base images and builds.
std::string images_dir(const std::string& data_dir);

// `qufop-builder import NAME[:TAG] TAR [--data-dir DIR]`: a rootfs tarball (tar, tar.gz, …)
// becomes a one-layer image tagged NAME:TAG in the store. argv[0] is "import". Prints the
// manifest digest; returns the exit code (2 for usage errors, 1 for a failed import).
int import_main(int argc, const char* const* argv);

}  // namespace qufop::builder
