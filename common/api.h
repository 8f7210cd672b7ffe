// The API types shared by the control plane (scheduler, noded, gate, qufopctl): the records
// kept in keeper (DESIGN.md "State") and the node protocol between noded and the scheduler,
// with their JSON forms. Every from_json() names the bad field ("instance.state: unknown state
// 'runing'"); every to_json() writes what from_json() reads back.
//
// Keeper keys (values are the JSON records below):
//   /users/<access key>          UserRecord
//   /uses/<access key>/<ufop>    "{}": the user added a semi-public UFOP (`qufopctl use`)
//   /ufops/<name>                UfopRecord (owner, mode, desired counts per version)
//   /versions/<name>/<n>         VersionRecord (image and what an instance of it needs)
//   /instances/<ufop>/<id>       InstanceRecord (placement and last reported state)
//   /nodes/<id>                  NodeRecord
//   /events/<seq>                free text events (placement failures, node down/up)
// DESIGN.md put versions under /ufops/<name>/versions/; they live under their own prefix so a
// watch or range of /ufops/ sees UFOP records only.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.h"
#include "common/result.h"

namespace qufop::api {

// ---- keys ----
inline constexpr std::string_view kUsersPrefix = "/users/";
inline constexpr std::string_view kUsesPrefix = "/uses/";
inline constexpr std::string_view kUfopsPrefix = "/ufops/";
inline constexpr std::string_view kVersionsPrefix = "/versions/";
inline constexpr std::string_view kInstancesPrefix = "/instances/";
inline constexpr std::string_view kNodesPrefix = "/nodes/";
inline constexpr std::string_view kEventsPrefix = "/events/";

std::string user_key(std::string_view access_key);
std::string use_key(std::string_view access_key, std::string_view ufop);
std::string ufop_key(std::string_view name);
std::string versions_prefix(std::string_view ufop);  // "/versions/<ufop>/"
std::string version_key(std::string_view ufop, int64_t version);
std::string instances_prefix(std::string_view ufop);  // "/instances/<ufop>/"
std::string instance_key(std::string_view ufop, std::string_view id);
std::string node_key(std::string_view id);

// UFOP names: 5-20 characters of [a-z0-9_-] (DESIGN.md "UFOP contract"). The error says why.
Result<void> check_ufop_name(std::string_view name);
// Node ids: 1-64 characters of [A-Za-z0-9._-].
Result<void> check_node_id(std::string_view id);

// ---- resources ----
struct Resources {
  int64_t cpu_millis = 0;
  int64_t memory_bytes = 0;
  int64_t disk_bytes = 0;
  int64_t ports = 0;
};
json::Value to_json(const Resources& r);
Result<Resources> resources_from_json(const json::Value& v, std::string_view what);

// ---- instances ----
enum class InstanceState {
  kPending,    // assigned, not started on the node yet
  kPulling,    // the node is fetching the image
  kStarting,   // sandbox up, waiting for the first health check
  kRunning,    // healthy: the gate routes to it
  kUnhealthy,  // running, failing its health check
  kCooling,    // being stopped: the gate sends nothing new, in-flight requests finish
  kStopping,   // SIGTERM sent, StopWait in progress
  kExited,     // the process ended (exit_code) or was stopped
  kFailed,     // could not be started (message says why)
};
std::string_view to_string(InstanceState s);
Result<InstanceState> parse_instance_state(std::string_view text);
// Exited and failed: nothing of it runs any more.
bool is_terminal(InstanceState s);

// Everything a node needs to run one instance (from the version's image and descriptor).
struct InstanceSpec {
  std::string registry;           // host:port serving the OCI distribution API
  std::string image;              // repository: "ufop-demo"
  std::string reference;          // tag or digest: "3", "sha256:…"
  std::vector<std::string> argv;  // empty: the image's entrypoint + cmd
  std::vector<std::string> env;   // "K=V", on top of the image's
  int port = 9100;                // the instance's port (PORT in its env)
  std::string health;             // HTTP path checked with GET; empty: TCP connect
  int64_t cpu_millis = 0;         // limit and placement request; 0: unlimited, placed as 0
  int64_t memory_bytes = 0;
  int64_t pids = 0;
  int64_t stop_wait_ms = 10'000;
  int64_t warmup_ms = 0;
  bool readonly = false;
};
json::Value to_json(const InstanceSpec& s);
Result<InstanceSpec> instance_spec_from_json(const json::Value& v, std::string_view what);

// ---- node protocol: noded <-> scheduler ----
// POST /v1/nodes/<id>/heartbeat, body NodeStatus -> HeartbeatReply. The first heartbeat
// registers the node. Every node request carries the cluster token:
// `Authorization: Bearer <token>`.
// GET /v1/nodes/<id>/assignments?index=N&wait=30s -> AssignmentList, answered as soon as the
// node's assignment index passes N (or at the wait with the same index). The list is the whole
// desired set: the node stops every instance of its own that is not in it.

struct InstanceStatus {
  std::string id;
  InstanceState state = InstanceState::kPending;
  int exit_code = 0;  // kExited: the shell convention (128+N for signal N)
  std::string ip;     // inside the node's bridge subnet
  int host_port = 0;  // published on the node's address
  std::string message;
  int64_t since_ms = 0;  // when it entered this state (node clock, unix ms)
};
json::Value to_json(const InstanceStatus& s);
Result<InstanceStatus> instance_status_from_json(const json::Value& v, std::string_view what);

struct NodeStatus {
  std::string id;
  std::string address;  // where the node's published ports are reached (IP or host)
  std::string api;      // noded's own listen address, host:port
  std::map<std::string, std::string> labels;
  Resources capacity;  // what instances may use in all (the node's, minus its reserve)
  Resources free;      // capacity minus what its instances hold now
  std::vector<InstanceStatus> instances;
  std::string boot_id;  // changes when noded restarts (informational)
};
json::Value to_json(const NodeStatus& s);
Result<NodeStatus> node_status_from_json(const json::Value& v);

struct HeartbeatReply {
  int64_t assignments_index = 0;  // poll assignments when this passes the node's last one
  int64_t heartbeat_ms = 1000;
};
json::Value to_json(const HeartbeatReply& r);
Result<HeartbeatReply> heartbeat_reply_from_json(const json::Value& v);

struct Assignment {
  std::string id;  // instance id: "<ufop>-<8 hex>"; the sandbox is "qf-<id>"
  std::string ufop;
  int64_t version = 0;
  InstanceSpec spec;
};
struct AssignmentList {
  int64_t index = 0;
  std::vector<Assignment> instances;
};
json::Value to_json(const AssignmentList& l);
Result<AssignmentList> assignment_list_from_json(const json::Value& v);

// ---- keeper records ----
enum class UfopMode { kPublic = 0, kSemiPublic = 1, kPrivate = 2 };

struct UserRecord {
  std::string name;
  std::string access_key;
  std::string secret_key;
  std::string user_class = "free";  // "free" | "paid": the gate's queue bounds
  bool admin = false;
};
json::Value to_json(const UserRecord& r);
Result<UserRecord> user_from_json(const json::Value& v);

struct UfopRecord {
  std::string name;
  std::string owner;  // the owner's access key
  UfopMode mode = UfopMode::kPrivate;
  std::string desc;
  int64_t created_ms = 0;
  int64_t latest_version = 0;          // the newest built version; 0: none yet
  std::map<int64_t, int64_t> desired;  // version -> instance count
  int concurrency = 1;                 // requests one instance takes at once (the gate's)
};
json::Value to_json(const UfopRecord& r);
Result<UfopRecord> ufop_from_json(const json::Value& v);

struct VersionRecord {
  std::string ufop;
  int64_t version = 0;
  std::string digest;  // the image manifest's
  InstanceSpec spec;
  int64_t created_ms = 0;
};
json::Value to_json(const VersionRecord& r);
Result<VersionRecord> version_from_json(const json::Value& v);

struct InstanceRecord {
  std::string id;
  std::string ufop;
  int64_t version = 0;
  std::string node;
  InstanceState state = InstanceState::kPending;
  bool stop_requested = false;  // the scheduler is stopping it (cooling, then gone)
  std::string address;          // "<node address>:<host port>" once published; the gate's target
  std::string ip;
  int host_port = 0;
  int exit_code = 0;
  std::string message;
  int64_t created_ms = 0;
  int64_t running_since_ms = 0;  // first healthy: the warm-up ramp starts here
  int64_t warmup_ms = 0;
};
json::Value to_json(const InstanceRecord& r);
Result<InstanceRecord> instance_from_json(const json::Value& v);

enum class NodeHealth { kUp, kDown };
struct NodeRecord {
  std::string id;
  std::string address;
  std::string api;
  std::map<std::string, std::string> labels;
  Resources capacity;
  Resources free;
  NodeHealth health = NodeHealth::kUp;
  int64_t registered_ms = 0;
  int64_t last_seen_ms = 0;  // written on registration and state changes only
};
json::Value to_json(const NodeRecord& r);
Result<NodeRecord> node_from_json(const json::Value& v);

// Parses JSON text into a record: `parse_record(text, instance_from_json)`.
template <typename T>
Result<T> parse_record(std::string_view text, Result<T> (*from)(const json::Value&)) {
  auto v = json::parse(text);
  if (!v) return v.error();
  return from(*v);
}

}  // namespace qufop::api
