#include "noded/restore.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <charconv>
#include <cstring>

#include "common/files.h"
#include "common/json.h"

namespace qufop::noded {

std::string to_text(const InstanceFile& f) {
  json::Object o;
  o["assignments"] = api::to_json(api::AssignmentList{0, {f.assignment}});
  o["sandbox_id"] = f.sandbox_id;
  o["init_pid"] = static_cast<int64_t>(f.init_pid);
  o["init_start_time"] = f.init_start_time;
  o["run_dir"] = f.run_dir;
  o["cgroup_parent"] = f.cgroup_parent;
  json::Array layers;
  for (const auto& l : f.layers) layers.emplace_back(l);
  o["layers"] = std::move(layers);
  o["log_dir"] = f.log_dir;
  o["ip"] = f.ip;
  o["host_port"] = f.host_port;
  return json::serialize(o);
}

Result<InstanceFile> instance_file_from_text(std::string_view text) {
  auto v = json::parse(text);
  if (!v) return v.error();
  auto obj = json::get_object(*v, "instance file");
  if (!obj) return obj.error();
  const json::Object& o = **obj;
  InstanceFile f;
  auto* list = o.if_contains("assignments");
  if (!list) return Error::invalid("instance file: no assignments");
  auto al = api::assignment_list_from_json(*list);
  if (!al) return al.error();
  if (al->instances.size() != 1) return Error::invalid("instance file: expected one assignment");
  f.assignment = al->instances[0];
  auto s = json::get_string(o, "sandbox_id");
  auto pid = json::get_int(o, "init_pid");
  auto run = json::get_string(o, "run_dir");
  auto cg = json::get_string(o, "cgroup_parent");
  auto log = json::get_string(o, "log_dir");
  auto ip = json::get_string(o, "ip");
  auto port = json::get_int(o, "host_port");
  for (const Error* e :
       {s ? nullptr : &s.error(), pid ? nullptr : &pid.error(), run ? nullptr : &run.error(),
        cg ? nullptr : &cg.error(), log ? nullptr : &log.error(), ip ? nullptr : &ip.error(),
        port ? nullptr : &port.error()}) {
    if (e) return e->wrap("instance file");
  }
  const auto* st = o.if_contains("init_start_time");
  if (!st || !(st->is_uint64() || st->is_int64())) {
    return Error::invalid("instance file: field 'init_start_time': expected an integer");
  }
  f.init_start_time = st->is_uint64() ? st->as_uint64() : static_cast<uint64_t>(st->as_int64());
  const auto* layers = o.if_contains("layers");
  if (!layers || !layers->is_array()) return Error::invalid("instance file: no layers");
  for (const auto& l : layers->as_array()) {
    if (!l.is_string()) return Error::invalid("instance file: layers: expected strings");
    f.layers.emplace_back(l.as_string());
  }
  f.sandbox_id = *s;
  f.init_pid = static_cast<pid_t>(*pid);
  f.run_dir = *run;
  f.cgroup_parent = *cg;
  f.log_dir = *log;
  f.ip = *ip;
  f.host_port = static_cast<int>(*port);
  return f;
}

Result<void> write_instance_file(const std::string& dir, const InstanceFile& f) {
  return write_file_atomic(dir + "/" + f.assignment.id + ".json", to_text(f), 0600);
}

Result<void> remove_instance_file(const std::string& dir, const std::string& id) {
  std::string path = dir + "/" + id + ".json";
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return Error::sys("unlink(" + path + ")", errno);
  return fsync_dir(dir);
}

Result<InstanceFiles> read_instance_files(const std::string& dir) {
  InstanceFiles out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    if (errno == ENOENT) return out;
    return Error::sys("opendir(" + dir + ")", errno);
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0) names.push_back(name);
    // A tmp file is a write that never finished: the rename did not happen, so it counts not.
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0) {
      ::unlink((dir + "/" + name).c_str());
    }
  }
  ::closedir(d);
  for (const auto& name : names) {
    std::string path = dir + "/" + name;
    auto text = read_text_file(path);
    auto f = text ? instance_file_from_text(*text) : Result<InstanceFile>(text.error());
    if (!f) {
      out.bad.push_back(path + ": " + f.error().message);
      continue;
    }
    out.files.push_back(std::move(*f));
  }
  return out;
}

Result<ProcStat> parse_proc_stat(std::string_view text) {
  size_t close = text.rfind(')');
  if (close == std::string_view::npos || close + 2 >= text.size()) {
    return Error::invalid("proc stat: no ')' after the command");
  }
  std::string_view rest = text.substr(close + 2);  // "S 1 2 ..." : field 3 onwards
  ProcStat st;
  st.state = rest[0];
  // starttime is field 22: the 20th after the state (field 3).
  int field = 3;
  size_t pos = 0;
  while (field < 22) {
    pos = rest.find(' ', pos);
    if (pos == std::string_view::npos) return Error::invalid("proc stat: too few fields");
    ++pos;
    ++field;
  }
  size_t end = rest.find(' ', pos);
  std::string_view num = rest.substr(pos, end == std::string_view::npos ? end : end - pos);
  auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), st.start_time);
  if (ec != std::errc() || num.empty()) return Error::invalid("proc stat: bad starttime");
  return st;
}

Result<ProcStat> read_proc_stat(pid_t pid) {
  auto text = read_text_file("/proc/" + std::to_string(pid) + "/stat");
  if (!text) return text.error();
  return parse_proc_stat(*text);
}

bool same_process(pid_t pid, uint64_t start_time) {
  if (pid <= 1) return false;
  auto st = read_proc_stat(pid);
  return st.ok() && st->state != 'Z' && st->start_time == start_time;
}

}  // namespace qufop::noded
