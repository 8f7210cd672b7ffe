#include "noded/resources.h"

#include <sched.h>

#include <algorithm>
#include <charconv>

#include "common/files.h"

namespace qufop::noded {

namespace {

Result<int64_t> parse_number(std::string_view text, std::string_view what) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v < 0) {
    return Error::invalid(std::string(what) + ": '" + std::string(text) + "' is not a number");
  }
  return v;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

}  // namespace

Result<int64_t> parse_meminfo_total(std::string_view meminfo) {
  size_t pos = 0;
  while (pos < meminfo.size()) {
    size_t eol = meminfo.find('\n', pos);
    std::string_view line = meminfo.substr(pos, eol == std::string_view::npos ? eol : eol - pos);
    pos = eol == std::string_view::npos ? meminfo.size() : eol + 1;
    if (line.rfind("MemTotal:", 0) != 0) continue;
    std::string_view rest = trim(line.substr(9));
    int64_t scale = 1;
    if (rest.size() > 3 && rest.substr(rest.size() - 3) == " kB") {
      scale = 1024;
      rest = trim(rest.substr(0, rest.size() - 3));
    }
    auto v = parse_number(rest, "meminfo MemTotal");
    if (!v) return v.error();
    return *v * scale;
  }
  return Error::invalid("meminfo: no MemTotal line");
}

Result<int64_t> parse_cpu_list_count(std::string_view list) {
  list = trim(list);
  if (list.empty()) return Error::invalid("cpu list: empty");
  int64_t count = 0;
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    std::string_view part =
        list.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    size_t dash = part.find('-');
    auto first = parse_number(part.substr(0, dash), "cpu list");
    if (!first) return first.error();
    int64_t last = *first;
    if (dash != std::string_view::npos) {
      auto l = parse_number(part.substr(dash + 1), "cpu list");
      if (!l) return l.error();
      if (*l < *first) return Error::invalid("cpu list: range '" + std::string(part) + "'");
      last = *l;
    }
    count += last - *first + 1;
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return count;
}

int64_t disk_bytes(const struct statvfs& st) {
  return static_cast<int64_t>(st.f_blocks) * static_cast<int64_t>(st.f_frsize);
}

api::Resources capacity(const api::Resources& node, const Reserve& reserve) {
  api::Resources c = node;
  c.cpu_millis = std::max<int64_t>(0, node.cpu_millis - reserve.cpu_millis);
  c.memory_bytes = std::max<int64_t>(0, node.memory_bytes - reserve.memory_bytes);
  return c;
}

api::Resources free_resources(const api::Resources& cap, const Held& held) {
  api::Resources f = cap;
  f.cpu_millis = std::max<int64_t>(0, cap.cpu_millis - held.cpu_millis);
  f.memory_bytes = std::max<int64_t>(0, cap.memory_bytes - held.memory_bytes);
  f.ports = std::max<int64_t>(0, cap.ports - held.ports);
  return f;
}

Result<api::Resources> probe_node(const std::string& data_dir, int64_t ports) {
  api::Resources r;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) {
    return Error::sys("sched_getaffinity", errno);
  }
  r.cpu_millis = static_cast<int64_t>(CPU_COUNT(&set)) * 1000;
  auto meminfo = read_text_file("/proc/meminfo");
  if (!meminfo) return meminfo.error();
  auto mem = parse_meminfo_total(*meminfo);
  if (!mem) return mem.error();
  r.memory_bytes = *mem;
  struct statvfs st {};
  if (::statvfs(data_dir.c_str(), &st) != 0) return Error::sys("statvfs(" + data_dir + ")", errno);
  r.disk_bytes = disk_bytes(st);
  r.ports = ports;
  return r;
}

}  // namespace qufop::noded
