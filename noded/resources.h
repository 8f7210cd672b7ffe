// What a node offers its instances (NodeStatus capacity and free): cpu in millicores from the
// cpu count or the cpuset, memory from /proc/meminfo, disk from statvfs of the data dir, host
// ports from the published range — each minus the node's reserve. Parsers take canned kernel
// text, so they are unit-tested without the kernel.
#pragma once

#include <sys/statvfs.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/api.h"
#include "common/result.h"

namespace qufop::noded {

// MemTotal of /proc/meminfo text, in bytes.
Result<int64_t> parse_meminfo_total(std::string_view meminfo);
// Number of cpus in a cpuset list: "0-3,8,10-11" -> 7.
Result<int64_t> parse_cpu_list_count(std::string_view list);
// Bytes of the filesystem: f_blocks * f_frsize.
int64_t disk_bytes(const struct statvfs& st);

struct Reserve {
  int64_t cpu_millis = 0;
  int64_t memory_bytes = 256ll << 20;
};

// The node's resources minus the reserve, never below 0.
api::Resources capacity(const api::Resources& node, const Reserve& reserve);
// What the instances hold: each one's cpu and memory request, a host port each when published.
struct Held {
  int64_t cpu_millis = 0;
  int64_t memory_bytes = 0;
  int64_t ports = 0;
};
api::Resources free_resources(const api::Resources& capacity, const Held& held);

// The real node: cpus of this process's affinity mask (what a cpuset allows), /proc/meminfo,
// statvfs(data_dir), `ports` host ports.
Result<api::Resources> probe_node(const std::string& data_dir, int64_t ports);

}  // namespace qufop::noded
