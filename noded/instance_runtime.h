// The real InstanceRuntime: images pulled from the assignment's registry (one pull per image at
// a time, layers cached by digest), a sandbox per instance in a network namespace wired to the
// node bridge with its port published, output appended to <state>/logs/<id>/output.log, and a
// record per instance (restore.h) so a restarted noded adopts what still runs.
#pragma once

#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "builder/oci.h"
#include "builder/puller.h"
#include "netfilter/network.h"
#include "noded/agent.h"
#include "noded/cgroup.h"
#include "noded/restore.h"
#include "noded/sandbox.h"
#include "noded/seccomp.h"

namespace qufop::noded {

struct RuntimeOptions {
  std::string state_dir;  // <data dir>/noded
  std::string cgroup_parent = "qufop";
  std::string init_path;  // qufop-init; empty: next to the binary
  uint64_t log_max_bytes = 10u << 20;
  int log_keep = 3;
};

class SandboxRuntime final : public InstanceRuntime {
 public:
  // Opens the image store, the cgroup manager, the seccomp profile and the node network (set
  // up: bridge, sysctls, table).
  static Result<std::unique_ptr<SandboxRuntime>> open(const RuntimeOptions& options,
                                                      const netfilter::NetworkConfig& network);
  ~SandboxRuntime() override;

  // Once, at startup, before any start(): adopts each recorded instance whose pid 1 is still
  // the same process, cleans up the ones that died meanwhile (reported as exited, exit status
  // unknown) and stray run dirs, then reconciles the node network with what lives.
  std::vector<AdoptedInstance> restore();

  Result<StartedInstance> start(const api::Assignment& a) override;
  bool probe(const std::string& id, const api::InstanceSpec& spec) override;
  std::optional<ExitInfo> exited(const std::string& id) override;
  Result<ExitInfo> stop(const std::string& id, std::chrono::milliseconds stop_wait) override;
  void forget(const std::string& id) override;

  // Copy-truncate rotation of every instance's output.log that grew past the cap.
  void rotate_logs(const std::vector<std::string>& ids);
  std::string log_path(const std::string& id) const;
  // Size of the host port range (NodeStatus ports).
  int64_t host_ports() const;
  // noded stops: with no instance left, the bridge and the table go too; else all stays.
  void shutdown();
  // StopWait-stops every instance at once (each with its own stop_wait) and forgets them: the
  // all-in-one's Ctrl-C, which leaves nothing running.
  void stop_all();

 private:
  struct Live {
    std::unique_ptr<Sandbox> sandbox;
    InstanceFile file;
    bool adopted = false;
  };
  SandboxRuntime(RuntimeOptions options, builder::OciStore store);
  Result<builder::PulledImage> pull(const api::InstanceSpec& spec);
  Result<SandboxSpec> sandbox_spec(const api::Assignment& a, const builder::PulledImage& image);
  StartOptions start_options() const;
  std::string instances_dir() const { return options_.state_dir + "/instances"; }
  std::string run_dir(const std::string& sandbox_id) const;
  std::string log_dir(const std::string& id) const;
  // Releases a sandbox and its network after its end; drops the record.
  void release(const std::string& id, Live& live);
  // What is left of a recorded instance whose processes are gone.
  void clean_dead(const InstanceFile& f);
  std::shared_ptr<Live> find(const std::string& id) const;

  RuntimeOptions options_;
  builder::OciStore store_;
  std::unique_ptr<builder::Puller> puller_;
  std::unique_ptr<CgroupManager> cgroups_;
  std::optional<SeccompProgram> seccomp_;
  std::unique_ptr<netfilter::NodeNetwork> net_;

  std::mutex pull_mu_;  // one registry pull at a time; `pulls_` dedupes the same image
  std::mutex pulls_mu_;
  std::map<std::string, std::shared_future<Result<builder::PulledImage>>> pulls_;

  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Live>> live_;
};

}  // namespace qufop::noded
