#include "common/api.h"

#include <boost/json.hpp>
#include <charconv>

namespace qufop::api {

namespace {

// Reads the fields of one JSON object into a struct, keeping the first error. Absent optional
// fields keep the struct's default; a present field of the wrong type is an error.
class Reader {
 public:
  Reader(const json::Value& v, std::string_view what) : what_(what) {
    obj_ = v.if_object();
    if (!obj_) fail("", "expected a JSON object");
  }

  void str(std::string_view field, std::string& out, bool required = false) {
    const auto* v = find(field, required);
    if (!v) return;
    if (!v->is_string()) return fail(field, "expected a string");
    out = std::string(v->get_string());
  }
  void i64(std::string_view field, int64_t& out, bool required = false) {
    const auto* v = find(field, required);
    if (!v) return;
    if (v->is_int64()) {
      out = v->get_int64();
    } else if (v->is_uint64() && v->get_uint64() <= INT64_MAX) {
      out = static_cast<int64_t>(v->get_uint64());
    } else if (v->is_string()) {  // int64 as a string, as etcd's JSON writes them
      try {
        size_t used = 0;
        out = std::stoll(std::string(v->get_string()), &used);
        if (used != v->get_string().size()) fail(field, "expected an integer");
      } catch (const std::exception&) {
        fail(field, "expected an integer");
      }
    } else {
      fail(field, "expected an integer");
    }
  }
  void i32(std::string_view field, int& out, bool required = false) {
    int64_t wide = out;
    i64(field, wide, required);
    if (wide < INT32_MIN || wide > INT32_MAX) return fail(field, "out of range");
    out = static_cast<int>(wide);
  }
  void boolean(std::string_view field, bool& out) {
    const auto* v = find(field, false);
    if (!v) return;
    if (!v->is_bool()) return fail(field, "expected true or false");
    out = v->get_bool();
  }
  void strings(std::string_view field, std::vector<std::string>& out) {
    const auto* v = find(field, false);
    if (!v) return;
    if (!v->is_array()) return fail(field, "expected an array of strings");
    out.clear();
    for (const auto& e : v->get_array()) {
      if (!e.is_string()) return fail(field, "expected an array of strings");
      out.emplace_back(e.get_string());
    }
  }
  void string_map(std::string_view field, std::map<std::string, std::string>& out) {
    const auto* v = find(field, false);
    if (!v) return;
    if (!v->is_object()) return fail(field, "expected an object of strings");
    out.clear();
    for (const auto& [k, e] : v->get_object()) {
      if (!e.is_string()) return fail(field, "expected an object of strings");
      out.emplace(std::string(k), std::string(e.get_string()));
    }
  }
  template <typename T, typename Parse>
  void nested(std::string_view field, T& out, Parse parse, bool required = false) {
    const auto* v = find(field, required);
    if (!v) return;
    auto r = parse(*v, path(field));
    if (!r) return fail_with(r.error());
    out = std::move(*r);
  }
  // Each element through parse(value, "what.field[i]").
  template <typename T, typename Parse>
  void list(std::string_view field, std::vector<T>& out, Parse parse) {
    const auto* v = find(field, false);
    if (!v) return;
    if (!v->is_array()) return fail(field, "expected an array");
    out.clear();
    size_t i = 0;
    for (const auto& e : v->get_array()) {
      auto r = parse(e, path(field) + "[" + std::to_string(i++) + "]");
      if (!r) return fail_with(r.error());
      out.push_back(std::move(*r));
    }
  }
  void state(std::string_view field, InstanceState& out) {
    std::string text;
    str(field, text, false);
    if (text.empty() || !error_.message.empty()) return;
    auto s = parse_instance_state(text);
    if (!s) return fail(field, s.error().message);
    out = *s;
  }
  void fail(std::string_view field, std::string_view why) {
    if (error_.message.empty()) error_ = Error::invalid(path(field) + ": " + std::string(why));
  }
  void fail_with(const Error& e) {
    if (error_.message.empty()) error_ = e;
  }
  // The struct, or the first error.
  template <typename T>
  Result<T> done(T value) {
    if (!error_.message.empty()) return error_;
    return value;
  }

 private:
  const json::Value* find(std::string_view field, bool required) {
    if (!obj_ || !error_.message.empty()) return nullptr;
    const auto* v = obj_->if_contains(field);
    if (v && v->is_null()) v = nullptr;
    if (!v && required) fail(field, "missing");
    return v;
  }
  std::string path(std::string_view field) const {
    if (field.empty()) return what_;
    return what_ + "." + std::string(field);
  }

  std::string what_;
  const json::Object* obj_ = nullptr;
  Error error_;
};

json::Array string_array(const std::vector<std::string>& v) {
  json::Array a;
  for (const auto& s : v) a.emplace_back(s);
  return a;
}

json::Object string_object(const std::map<std::string, std::string>& m) {
  json::Object o;
  for (const auto& [k, v] : m) o[k] = v;
  return o;
}

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

}  // namespace

std::string user_key(std::string_view access_key) {
  return std::string(kUsersPrefix) + std::string(access_key);
}
std::string use_key(std::string_view access_key, std::string_view ufop) {
  return std::string(kUsesPrefix) + std::string(access_key) + "/" + std::string(ufop);
}
std::string ufop_key(std::string_view name) {
  return std::string(kUfopsPrefix) + std::string(name);
}
std::string versions_prefix(std::string_view ufop) {
  return std::string(kVersionsPrefix) + std::string(ufop) + "/";
}
std::string version_key(std::string_view ufop, int64_t version) {
  return versions_prefix(ufop) + std::to_string(version);
}
std::string instances_prefix(std::string_view ufop) {
  return std::string(kInstancesPrefix) + std::string(ufop) + "/";
}
std::string instance_key(std::string_view ufop, std::string_view id) {
  return instances_prefix(ufop) + std::string(id);
}
std::string node_key(std::string_view id) { return std::string(kNodesPrefix) + std::string(id); }

Result<void> check_ufop_name(std::string_view name) {
  if (name.size() < 5 || name.size() > 20) {
    return Error::invalid("UFOP name '" + std::string(name) + "': must be 5 to 20 characters");
  }
  for (char c : name) {
    if (!name_char(c)) {
      return Error::invalid("UFOP name '" + std::string(name) +
                            "': only lowercase letters, digits, '-' and '_' are allowed");
    }
  }
  return ok();
}

Result<void> check_node_id(std::string_view id) {
  bool good = !id.empty() && id.size() <= 64;
  for (char c : id) {
    good = good && (name_char(c) || (c >= 'A' && c <= 'Z') || c == '.');
  }
  if (!good) {
    return Error::invalid("node id '" + std::string(id) +
                          "': must be 1 to 64 characters of letters, digits, '.', '-' and '_'");
  }
  return ok();
}

// ---- resources ----

json::Value to_json(const Resources& r) {
  return json::Object{{"cpu_millis", r.cpu_millis},
                      {"memory_bytes", r.memory_bytes},
                      {"disk_bytes", r.disk_bytes},
                      {"ports", r.ports}};
}

Result<Resources> resources_from_json(const json::Value& v, std::string_view what) {
  Resources r;
  Reader in(v, what);
  in.i64("cpu_millis", r.cpu_millis);
  in.i64("memory_bytes", r.memory_bytes);
  in.i64("disk_bytes", r.disk_bytes);
  in.i64("ports", r.ports);
  return in.done(r);
}

// ---- instance state ----

namespace {
constexpr std::pair<InstanceState, std::string_view> kStates[] = {
    {InstanceState::kPending, "pending"},     {InstanceState::kPulling, "pulling"},
    {InstanceState::kStarting, "starting"},   {InstanceState::kRunning, "running"},
    {InstanceState::kUnhealthy, "unhealthy"}, {InstanceState::kCooling, "cooling"},
    {InstanceState::kStopping, "stopping"},   {InstanceState::kExited, "exited"},
    {InstanceState::kFailed, "failed"},
};
}  // namespace

std::string_view to_string(InstanceState s) {
  for (const auto& [state, name] : kStates) {
    if (state == s) return name;
  }
  return "unknown";
}

Result<InstanceState> parse_instance_state(std::string_view text) {
  for (const auto& [state, name] : kStates) {
    if (name == text) return state;
  }
  return Error::invalid("unknown state '" + std::string(text) + "'");
}

bool is_terminal(InstanceState s) {
  return s == InstanceState::kExited || s == InstanceState::kFailed;
}

// ---- instance spec ----

json::Value to_json(const InstanceSpec& s) {
  return json::Object{{"registry", s.registry},
                      {"image", s.image},
                      {"reference", s.reference},
                      {"argv", string_array(s.argv)},
                      {"env", string_array(s.env)},
                      {"port", s.port},
                      {"health", s.health},
                      {"cpu_millis", s.cpu_millis},
                      {"memory_bytes", s.memory_bytes},
                      {"pids", s.pids},
                      {"stop_wait_ms", s.stop_wait_ms},
                      {"warmup_ms", s.warmup_ms},
                      {"readonly", s.readonly}};
}

Result<InstanceSpec> instance_spec_from_json(const json::Value& v, std::string_view what) {
  InstanceSpec s;
  Reader in(v, what);
  in.str("registry", s.registry, true);
  in.str("image", s.image, true);
  in.str("reference", s.reference, true);
  in.strings("argv", s.argv);
  in.strings("env", s.env);
  in.i32("port", s.port);
  in.str("health", s.health);
  in.i64("cpu_millis", s.cpu_millis);
  in.i64("memory_bytes", s.memory_bytes);
  in.i64("pids", s.pids);
  in.i64("stop_wait_ms", s.stop_wait_ms);
  in.i64("warmup_ms", s.warmup_ms);
  in.boolean("readonly", s.readonly);
  if (s.port < 1 || s.port > 65535) in.fail("port", "must be 1 to 65535");
  if (s.cpu_millis < 0) in.fail("cpu_millis", "must not be negative");
  if (s.memory_bytes < 0) in.fail("memory_bytes", "must not be negative");
  if (s.pids < 0) in.fail("pids", "must not be negative");
  if (s.stop_wait_ms < 0) in.fail("stop_wait_ms", "must not be negative");
  if (s.warmup_ms < 0) in.fail("warmup_ms", "must not be negative");
  return in.done(std::move(s));
}

// ---- node protocol ----

json::Value to_json(const InstanceStatus& s) {
  return json::Object{{"id", s.id},
                      {"state", to_string(s.state)},
                      {"exit_code", s.exit_code},
                      {"ip", s.ip},
                      {"host_port", s.host_port},
                      {"message", s.message},
                      {"since_ms", s.since_ms}};
}

Result<InstanceStatus> instance_status_from_json(const json::Value& v, std::string_view what) {
  InstanceStatus s;
  Reader in(v, what);
  in.str("id", s.id, true);
  in.state("state", s.state);
  in.i32("exit_code", s.exit_code);
  in.str("ip", s.ip);
  in.i32("host_port", s.host_port);
  in.str("message", s.message);
  in.i64("since_ms", s.since_ms);
  if (s.host_port < 0 || s.host_port > 65535) in.fail("host_port", "must be 0 to 65535");
  return in.done(std::move(s));
}

namespace {
void check_resources(Reader& in, std::string_view field, const Resources& r) {
  if (r.cpu_millis < 0 || r.memory_bytes < 0 || r.disk_bytes < 0 || r.ports < 0) {
    in.fail(field, "negative resources");
  }
}
}  // namespace

json::Value to_json(const NodeStatus& s) {
  json::Array instances;
  for (const auto& i : s.instances) instances.push_back(to_json(i));
  return json::Object{{"id", s.id},
                      {"address", s.address},
                      {"api", s.api},
                      {"labels", string_object(s.labels)},
                      {"capacity", to_json(s.capacity)},
                      {"free", to_json(s.free)},
                      {"instances", std::move(instances)},
                      {"boot_id", s.boot_id}};
}

Result<NodeStatus> node_status_from_json(const json::Value& v) {
  NodeStatus s;
  Reader in(v, "node");
  in.str("id", s.id, true);
  in.str("address", s.address, true);
  in.str("api", s.api);
  in.string_map("labels", s.labels);
  in.nested("capacity", s.capacity, resources_from_json, true);
  in.nested("free", s.free, resources_from_json, true);
  in.list("instances", s.instances, instance_status_from_json);
  in.str("boot_id", s.boot_id);
  check_resources(in, "capacity", s.capacity);
  check_resources(in, "free", s.free);
  if (!s.id.empty()) {
    if (auto c = check_node_id(s.id); !c) in.fail("id", c.error().message);
  }
  return in.done(std::move(s));
}

json::Value to_json(const HeartbeatReply& r) {
  return json::Object{{"assignments_index", r.assignments_index}, {"heartbeat_ms", r.heartbeat_ms}};
}

Result<HeartbeatReply> heartbeat_reply_from_json(const json::Value& v) {
  HeartbeatReply r;
  Reader in(v, "heartbeat reply");
  in.i64("assignments_index", r.assignments_index, true);
  in.i64("heartbeat_ms", r.heartbeat_ms);
  return in.done(r);
}

json::Value to_json(const AssignmentList& l) {
  json::Array list;
  for (const auto& a : l.instances) {
    list.push_back(json::Object{
        {"id", a.id}, {"ufop", a.ufop}, {"version", a.version}, {"spec", to_json(a.spec)}});
  }
  return json::Object{{"index", l.index}, {"instances", std::move(list)}};
}

Result<AssignmentList> assignment_list_from_json(const json::Value& v) {
  AssignmentList l;
  Reader in(v, "assignments");
  in.i64("index", l.index, true);
  in.list("instances", l.instances,
          [](const json::Value& e, const std::string& what) -> Result<Assignment> {
            Assignment a;
            Reader r(e, what);
            r.str("id", a.id, true);
            r.str("ufop", a.ufop, true);
            r.i64("version", a.version, true);
            r.nested("spec", a.spec, instance_spec_from_json, true);
            return r.done(std::move(a));
          });
  return in.done(std::move(l));
}

// ---- keeper records ----

json::Value to_json(const UserRecord& r) {
  return json::Object{{"name", r.name},
                      {"access_key", r.access_key},
                      {"secret_key", r.secret_key},
                      {"class", r.user_class},
                      {"admin", r.admin}};
}

Result<UserRecord> user_from_json(const json::Value& v) {
  UserRecord r;
  Reader in(v, "user");
  in.str("name", r.name, true);
  in.str("access_key", r.access_key, true);
  in.str("secret_key", r.secret_key, true);
  in.str("class", r.user_class);
  in.boolean("admin", r.admin);
  if (r.user_class != "free" && r.user_class != "paid") in.fail("class", "must be free or paid");
  return in.done(std::move(r));
}

json::Value to_json(const UfopRecord& r) {
  json::Object desired;
  for (const auto& [version, count] : r.desired) desired[std::to_string(version)] = count;
  return json::Object{{"name", r.name},
                      {"owner", r.owner},
                      {"mode", static_cast<int>(r.mode)},
                      {"desc", r.desc},
                      {"created_ms", r.created_ms},
                      {"latest_version", r.latest_version},
                      {"desired", std::move(desired)},
                      {"concurrency", r.concurrency}};
}

Result<UfopRecord> ufop_from_json(const json::Value& v) {
  UfopRecord r;
  Reader in(v, "ufop");
  in.str("name", r.name, true);
  in.str("owner", r.owner);
  int mode = static_cast<int>(r.mode);
  in.i32("mode", mode);
  if (mode < 0 || mode > 2) in.fail("mode", "must be 0 (public), 1 (semi-public) or 2 (private)");
  r.mode = static_cast<UfopMode>(mode);
  in.str("desc", r.desc);
  in.i64("created_ms", r.created_ms);
  in.i64("latest_version", r.latest_version);
  in.i32("concurrency", r.concurrency);
  if (r.concurrency < 1) in.fail("concurrency", "must be at least 1");
  const auto* desired = v.is_object() ? v.get_object().if_contains("desired") : nullptr;
  if (desired && !desired->is_object())
    in.fail("desired", "expected an object of version -> count");
  if (desired && desired->is_object()) {
    for (const auto& [key, count] : desired->get_object()) {
      int64_t version = 0;
      auto parsed = std::from_chars(key.data(), key.data() + key.size(), version);
      bool good_key = parsed.ec == std::errc() && parsed.ptr == key.data() + key.size();
      if (!good_key || version < 1 || !count.is_int64() || count.get_int64() < 0) {
        in.fail("desired", "entry '" + std::string(key) + "': expected version -> count >= 0");
        break;
      }
      r.desired[version] = count.get_int64();
    }
  }
  return in.done(std::move(r));
}

json::Value to_json(const VersionRecord& r) {
  return json::Object{{"ufop", r.ufop},
                      {"version", r.version},
                      {"digest", r.digest},
                      {"spec", to_json(r.spec)},
                      {"created_ms", r.created_ms}};
}

Result<VersionRecord> version_from_json(const json::Value& v) {
  VersionRecord r;
  Reader in(v, "version");
  in.str("ufop", r.ufop, true);
  in.i64("version", r.version, true);
  in.str("digest", r.digest);
  in.nested("spec", r.spec, instance_spec_from_json, true);
  in.i64("created_ms", r.created_ms);
  if (r.version < 1) in.fail("version", "must be at least 1");
  return in.done(std::move(r));
}

json::Value to_json(const InstanceRecord& r) {
  return json::Object{{"id", r.id},
                      {"ufop", r.ufop},
                      {"version", r.version},
                      {"node", r.node},
                      {"state", to_string(r.state)},
                      {"stop_requested", r.stop_requested},
                      {"address", r.address},
                      {"ip", r.ip},
                      {"host_port", r.host_port},
                      {"exit_code", r.exit_code},
                      {"message", r.message},
                      {"created_ms", r.created_ms},
                      {"running_since_ms", r.running_since_ms},
                      {"warmup_ms", r.warmup_ms}};
}

Result<InstanceRecord> instance_from_json(const json::Value& v) {
  InstanceRecord r;
  Reader in(v, "instance");
  in.str("id", r.id, true);
  in.str("ufop", r.ufop, true);
  in.i64("version", r.version, true);
  in.str("node", r.node);
  in.state("state", r.state);
  in.boolean("stop_requested", r.stop_requested);
  in.str("address", r.address);
  in.str("ip", r.ip);
  in.i32("host_port", r.host_port);
  in.i32("exit_code", r.exit_code);
  in.str("message", r.message);
  in.i64("created_ms", r.created_ms);
  in.i64("running_since_ms", r.running_since_ms);
  in.i64("warmup_ms", r.warmup_ms);
  return in.done(std::move(r));
}

json::Value to_json(const NodeRecord& r) {
  return json::Object{{"id", r.id},
                      {"address", r.address},
                      {"api", r.api},
                      {"labels", string_object(r.labels)},
                      {"capacity", to_json(r.capacity)},
                      {"free", to_json(r.free)},
                      {"health", r.health == NodeHealth::kUp ? "up" : "down"},
                      {"registered_ms", r.registered_ms},
                      {"last_seen_ms", r.last_seen_ms}};
}

Result<NodeRecord> node_from_json(const json::Value& v) {
  NodeRecord r;
  Reader in(v, "node");
  in.str("id", r.id, true);
  in.str("address", r.address);
  in.str("api", r.api);
  in.string_map("labels", r.labels);
  in.nested("capacity", r.capacity, resources_from_json);
  in.nested("free", r.free, resources_from_json);
  std::string health = "up";
  in.str("health", health);
  if (health != "up" && health != "down") in.fail("health", "must be up or down");
  r.health = health == "down" ? NodeHealth::kDown : NodeHealth::kUp;
  in.i64("registered_ms", r.registered_ms);
  in.i64("last_seen_ms", r.last_seen_ms);
  return in.done(std::move(r));
}

}  // namespace qufop::api
