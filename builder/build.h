// A build: a descriptor plus its (already extracted) upload -> an OCI image tagged
// <ufop>:<version> in the store (vendor-docs/builder.md).
//
// The base image's layers are unpacked once each into a cache keyed by digest (overlay whiteout
// form, into a temp dir renamed into place) and stacked as overlay lowerdirs; the upload is one
// more lowerdir on top, holding only `src/`, so the build sees it at /src. The build_script runs
// as root (a few file capabilities kept) in the noded sandbox: no network, memory/cpu/pids
// limits, a timeout after which the sandbox is stopped the StopWait way. Each line runs with
// `/bin/sh -c`, in order, stopping at the first that fails. The overlay's upper dir — minus
// anything under /src — becomes the one new layer (reproducible: sorted, fixed mtime); then the
// config and the manifest are stored and the tag is set last, so a failed build never shows in
// the index (its blobs, unreferenced, go at the next gc).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "builder/descriptor.h"
#include "builder/oci.h"
#include "common/result.h"

namespace qufop::noded {
class CgroupManager;
struct SeccompProgram;
}  // namespace qufop::noded

namespace qufop::builder {

struct BuildOptions {
  // The builder's state dir: layers/ (the unpacked layer cache) and run/ (sandbox run dirs).
  std::string state_dir;
  std::string init_path;      // qufop-init; empty: noded::default_init_path()
  std::string seccomp_cache;  // where the compiled seccomp profile is cached
  std::string cgroup_parent = "qufop";
  std::chrono::milliseconds timeout{10 * 60'000};
  std::chrono::milliseconds stop_wait{5'000};  // after the timeout: SIGTERM, then SIGKILL
  uint64_t memory_bytes = 2ull << 30;
  double cpus = 2;
  int64_t pids = 4096;
  size_t log_tail_lines = 20;  // of the build output, quoted in the error of a failed build
};

// One line of build output (without its newline), as it arrives.
using LogFn = std::function<void(std::string_view line)>;

struct BuildResult {
  BlobRef manifest;
  std::string ref;  // "<ufop>:<version>"
};

// The image config a build writes on top of the base's (exposed for tests): Entrypoint = run,
// Cmd cleared, Env = the base's with the descriptor's env and PORT set, ExposedPorts
// "<port>/tcp", WorkingDir the base's or "/", and labels org.qufop.{port,health,cpu,memory,
// stop_wait,warmup,readonly}.
ImageConfig build_config(const ImageConfig& base, const Descriptor& descriptor);

class Builder {
 public:
  // Compiles (or loads) the seccomp profile and sets up cgroups; creates the state dirs. Without
  // cgroups it still opens (serving images works), and builds with a build_script fail.
  static Result<std::unique_ptr<Builder>> open(const OciStore& store, BuildOptions options);
  ~Builder();
  Builder(const Builder&) = delete;
  Builder& operator=(const Builder&) = delete;

  const OciStore& store() const { return store_; }
  const BuildOptions& options() const { return options_; }

  // Builds `upload` (a directory; not changed, though it is moved while the build runs when it
  // is on the state dir's file system) as `ufop`:`version`. Thread-safe.
  Result<BuildResult> build(const Descriptor& descriptor, const std::filesystem::path& upload,
                            std::string_view ufop, std::string_view version, const LogFn& log);

  // The unpacked form of a stored layer (overlay whiteouts): <state>/layers/<hex>, unpacked on
  // first use (puller.h's cached_layer). Thread-safe.
  Result<std::string> cached_layer(std::string_view digest);

 private:
  Builder(OciStore store, BuildOptions options);
  struct Run;

  OciStore store_;
  BuildOptions options_;
  std::unique_ptr<noded::CgroupManager> cgroups_;  // null: builds fail with cgroups_error_
  std::string cgroups_error_;
  std::unique_ptr<noded::SeccompProgram> seccomp_;
};

// The shell script that runs the build_script lines (exposed for tests): each line echoed as
// "+ LINE" then run with /bin/sh -c; the first failure ends it with that line's exit code.
std::string build_shell_script(const std::vector<std::string>& lines);

}  // namespace qufop::builder
