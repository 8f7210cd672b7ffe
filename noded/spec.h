// What a sandbox is made from: the instance spec that noded (and the builder, and the one-shot
// `qufop-noded run`) turns into a running sandbox.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace qufop::noded {

struct Limits {
  double cpus = 0;            // fractional cpus as a CFS quota; 0 = unlimited
  uint64_t memory_bytes = 0;  // hard limit, swap off; 0 = unlimited
  int64_t pids = 0;           // max tasks; 0 = unlimited
  std::string cpuset;         // "0-1"; empty = inherit
  uint64_t nofile = 1024;     // RLIMIT_NOFILE
  uint64_t nproc = 0;         // RLIMIT_NPROC; 0 = leave as is
};

enum class NetMode {
  kNone,       // a new, empty network namespace with loopback up
  kHost,       // the host's network namespace
  kNamespace,  // join an existing netns (set up by netfilter): net_namespace_path
};

struct SandboxSpec {
  // Names every kernel object of this sandbox: cgroup "<cgroup_parent>/<id>", mount dirs.
  // 1-64 chars of [a-z0-9_-]; noded uses "qf-<instance id>".
  std::string id;
  // Read-only image layers, top first (overlay lowerdirs). One entry = a plain rootfs dir.
  std::vector<std::string> layers;
  // Per-sandbox scratch dir (created, removed at release): overlay upper/work, merged root.
  std::string run_dir;
  std::vector<std::string> argv;  // argv[0] resolved in the rootfs' PATH when not absolute
  std::vector<std::string> env;   // "K=V"; PATH defaults to the usual when absent
  std::string workdir = "/";
  std::string hostname;  // defaults to the id
  uint32_t uid = 65534;  // default: nobody
  uint32_t gid = 65534;
  std::vector<std::string> keep_capabilities;  // "CAP_NET_BIND_SERVICE"; default none
  bool readonly_root = false;
  NetMode net = NetMode::kNone;
  std::string net_namespace_path;  // for NetMode::kNamespace
  Limits limits;
  std::chrono::milliseconds stop_wait{10'000};
  // stdout+stderr go to <log_dir>/output.log, rotated at log_max_bytes, log_keep files kept.
  std::string log_dir;
  uint64_t log_max_bytes = 10u << 20;
  int log_keep = 3;
  std::string cgroup_parent = "qufop";  // "": right under each hierarchy's root
  bool use_seccomp = true;              // the default profile (seccomp.h)
};

}  // namespace qufop::noded
