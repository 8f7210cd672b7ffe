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

// `qufop-builder push NAME:TAG REGISTRY_HOST:PORT [--data-dir DIR] [--as NAME:TAG]`: the local
// image to an external registry (distribution API, plain HTTP). argv[0] is "push".
int push_main(int argc, const char* const* argv);

// `qufop-builder pull NAME:TAG REGISTRY_HOST:PORT [--data-dir DIR] [--cache DIR]`: an image from
// a registry into the local store, its layers unpacked into the layer cache (default
// DATA_DIR/builder/layers). argv[0] is "pull".
int pull_main(int argc, const char* const* argv);

}  // namespace qufop::builder
