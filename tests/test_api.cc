// The control plane's records and node protocol: JSON round trips and errors naming the field.
#include "common/api.h"

#include <gtest/gtest.h>

namespace qufop::api {
namespace {

template <typename T>
T round_trip(const T& in, Result<T> (*from)(const json::Value&)) {
  auto text = json::serialize(to_json(in));
  auto out = parse_record(text, from);
  EXPECT_TRUE(out.ok()) << (out.ok() ? "" : out.error().message);
  return out.ok() ? *out : T{};
}

InstanceSpec sample_spec() {
  InstanceSpec s;
  s.registry = "127.0.0.1:7400";
  s.image = "ufop-demo";
  s.reference = "3";
  s.argv = {"/app/ufop-demo", "-f", "/app/ufop.conf"};
  s.env = {"A=1"};
  s.port = 9100;
  s.health = "/health";
  s.cpu_millis = 500;
  s.memory_bytes = 64 << 20;
  s.warmup_ms = 3000;
  return s;
}

TEST(ApiRecords, InstanceRoundTrips) {
  InstanceRecord r;
  r.id = "ufop-demo-0a1b2c3d";
  r.ufop = "ufop-demo";
  r.version = 3;
  r.node = "node-1";
  r.state = InstanceState::kCooling;
  r.stop_requested = true;
  r.address = "10.0.0.2:20001";
  r.host_port = 20001;
  r.running_since_ms = 42;
  auto out = round_trip(r, instance_from_json);
  EXPECT_EQ(out.id, r.id);
  EXPECT_EQ(out.state, InstanceState::kCooling);
  EXPECT_TRUE(out.stop_requested);
  EXPECT_EQ(out.address, r.address);
  EXPECT_EQ(out.running_since_ms, 42);
}

TEST(ApiRecords, UfopDesiredCountsRoundTrip) {
  UfopRecord r;
  r.name = "ufop-demo";
  r.mode = UfopMode::kSemiPublic;
  r.desired = {{1, 4}, {2, 2}};
  auto out = round_trip(r, ufop_from_json);
  EXPECT_EQ(out.mode, UfopMode::kSemiPublic);
  EXPECT_EQ(out.desired, r.desired);
}

TEST(ApiRecords, VersionAndAssignmentsCarryTheSpec) {
  VersionRecord v;
  v.ufop = "ufop-demo";
  v.version = 3;
  v.spec = sample_spec();
  auto out = round_trip(v, version_from_json);
  EXPECT_EQ(out.spec.argv, v.spec.argv);
  EXPECT_EQ(out.spec.health, "/health");
  EXPECT_EQ(out.spec.memory_bytes, 64 << 20);

  AssignmentList l{7, {{"ufop-demo-1", "ufop-demo", 3, sample_spec()}}};
  auto back = assignment_list_from_json(to_json(l));
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->index, 7);
  ASSERT_EQ(back->instances.size(), 1u);
  EXPECT_EQ(back->instances[0].spec.warmup_ms, 3000);
}

TEST(ApiRecords, NodeStatusRoundTrips) {
  NodeStatus s;
  s.id = "node-1";
  s.address = "10.0.0.2";
  s.labels = {{"zone", "a"}};
  s.capacity = {2000, 1 << 30, 10 << 20, 100};
  s.free = {1500, 1 << 29, 10 << 20, 99};
  s.instances.push_back({"i-1", InstanceState::kRunning, 0, "10.88.0.2", 20000, "", 5});
  auto out = round_trip(s, node_status_from_json);
  EXPECT_EQ(out.labels, s.labels);
  EXPECT_EQ(out.capacity.cpu_millis, 2000);
  ASSERT_EQ(out.instances.size(), 1u);
  EXPECT_EQ(out.instances[0].state, InstanceState::kRunning);
  EXPECT_EQ(out.instances[0].host_port, 20000);
}

std::string error_of(std::string_view text) {
  auto r = parse_record(text, node_status_from_json);
  return r.ok() ? "" : r.error().message;
}

TEST(ApiRecords, BadInputNamesTheField) {
  EXPECT_EQ(error_of(R"({"address":"a","capacity":{},"free":{}})"), "node.id: missing");
  EXPECT_EQ(error_of(R"({"id":"n","address":"a","capacity":{"memory_bytes":-1},"free":{}})"),
            "node.capacity: negative resources");
  EXPECT_EQ(error_of(R"({"id":"n","address":"a","capacity":{},"free":{},)"
                     R"("instances":[{"id":"x","state":"runing"}]})"),
            "node.instances[0].state: unknown state 'runing'");
  EXPECT_EQ(error_of(R"({"id":"n","address":"a","capacity":{"cpu_millis":"x"},"free":{}})"),
            "node.capacity.cpu_millis: expected an integer");
  EXPECT_EQ(error_of(R"({"id":"bad id","address":"a","capacity":{},"free":{}})"),
            "node.id: node id 'bad id': must be 1 to 64 characters of letters, digits, '.', '-' "
            "and '_'");
  EXPECT_EQ(error_of("[1]"), "node: expected a JSON object");
  auto u = parse_record(R"({"name":"ufop-demo","desired":{"x":1}})", ufop_from_json);
  ASSERT_FALSE(u.ok());
  EXPECT_EQ(u.error().message, "ufop.desired: entry 'x': expected version -> count >= 0");
}

TEST(ApiRecords, UfopNames) {
  EXPECT_TRUE(check_ufop_name("ufop-demo").ok());
  EXPECT_TRUE(check_ufop_name("a_b-1").ok());
  EXPECT_FALSE(check_ufop_name("demo").ok());
  EXPECT_FALSE(check_ufop_name("Ufop-demo").ok());
  EXPECT_FALSE(check_ufop_name("ufop-demo-is-far-too-long").ok());
  EXPECT_FALSE(check_ufop_name("ufop/demo").ok());
}

TEST(ApiRecords, Keys) {
  EXPECT_EQ(instance_key("ufop-demo", "i1"), "/instances/ufop-demo/i1");
  EXPECT_EQ(version_key("ufop-demo", 3), "/versions/ufop-demo/3");
  EXPECT_EQ(use_key("AK", "ufop-demo"), "/uses/AK/ufop-demo");
}

}  // namespace
}  // namespace qufop::api
