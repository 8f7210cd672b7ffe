// Live restore: each running instance's record, kept in <state>/instances/<id>.json (written
// atomically: tmp, fsync, rename, fsync of the dir), so a restarted noded finds its instances
// again — the assignment and the sandbox facts: pid 1 and its start time (a pid alone may have
// been reused), run dir, cgroup, layers, log dir, address and host port.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/api.h"
#include "common/result.h"

namespace qufop::noded {

struct InstanceFile {
  api::Assignment assignment;
  std::string sandbox_id;  // "qf-<instance id>"
  pid_t init_pid = -1;
  uint64_t init_start_time = 0;  // /proc/<pid>/stat starttime (clock ticks since boot)
  std::string run_dir;
  std::string cgroup_parent;
  std::vector<std::string> layers;
  std::string log_dir;
  std::string ip;
  int host_port = 0;
};

std::string to_text(const InstanceFile& f);
Result<InstanceFile> instance_file_from_text(std::string_view text);

Result<void> write_instance_file(const std::string& dir, const InstanceFile& f);
Result<void> remove_instance_file(const std::string& dir, const std::string& id);
struct InstanceFiles {
  std::vector<InstanceFile> files;
  std::vector<std::string> bad;  // "path: why" of unreadable files (left for the operator)
};
Result<InstanceFiles> read_instance_files(const std::string& dir);

struct ProcStat {
  char state = '?';  // R, S, D, Z, …
  uint64_t start_time = 0;
};
// /proc/<pid>/stat text (the command may hold spaces and parentheses).
Result<ProcStat> parse_proc_stat(std::string_view text);
Result<ProcStat> read_proc_stat(pid_t pid);
// The process is alive (not a zombie) and started at `start_time`.
bool same_process(pid_t pid, uint64_t start_time);

}  // namespace qufop::noded
