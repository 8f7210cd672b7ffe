// The agent's state machine over a fake runtime, manual executors and a manual clock (no
// thread, no timing); the resource parsers on canned kernel text; copy-truncate rotation; the
// instance records of live restore.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "noded/agent.h"
#include "noded/output_log.h"
#include "noded/resources.h"
#include "noded/restore.h"

namespace qufop::noded {
namespace {

using api::InstanceState;

class FakeRuntime : public InstanceRuntime {
 public:
  Result<StartedInstance> start(const api::Assignment& a) override {
    starts.push_back(a.id);
    if (a.spec.image == "bad") return Error::invalid("pulling bad:1: manifest unknown");
    running.insert(a.id);
    return StartedInstance{"10.0.0." + std::to_string(running.size() + 1),
                           20000 + static_cast<int>(running.size())};
  }
  bool probe(const std::string& id, const api::InstanceSpec&) override {
    ++probes;
    return healthy.count(id) > 0;
  }
  std::optional<ExitInfo> exited(const std::string& id) override {
    auto it = exits.find(id);
    if (it == exits.end()) return std::nullopt;
    running.erase(id);
    return it->second;
  }
  Result<ExitInfo> stop(const std::string& id, std::chrono::milliseconds) override {
    stops.push_back(id);
    running.erase(id);
    return ExitInfo{143, "stopped"};
  }
  void forget(const std::string& id) override { forgotten.push_back(id); }

  std::vector<std::string> starts, stops, forgotten;
  std::set<std::string> running, healthy;
  std::map<std::string, ExitInfo> exits;
  int probes = 0;
};

class AgentTest : public ::testing::Test {
 protected:
  AgentTest()
      : agent_(
            rt_, [this](std::function<void()> f) { work_.push_back(std::move(f)); },
            [this](std::function<void()> f) { probe_q_.push_back(std::move(f)); },
            [this] { return now_; }, options()) {}
  static AgentOptions options() {
    AgentOptions o;
    o.cooling = std::chrono::milliseconds(1000);
    return o;
  }
  static void drain(std::deque<std::function<void()>>& q) {
    while (!q.empty()) {
      auto f = std::move(q.front());
      q.pop_front();
      f();
    }
  }
  // One round: a step, then every queued task, then the clock moves on.
  void round(int64_t advance_ms = 100) {
    agent_.step();
    drain(work_);
    drain(probe_q_);
    now_ += advance_ms;
  }
  static api::Assignment assignment(const std::string& id, const std::string& image = "demo") {
    api::Assignment a;
    a.id = id;
    a.ufop = "demo";
    a.version = 1;
    a.spec.registry = "127.0.0.1:7400";
    a.spec.image = image;
    a.spec.reference = "1";
    a.spec.cpu_millis = 500;
    a.spec.memory_bytes = 64 << 20;
    return a;
  }
  void assign(int64_t index, std::vector<api::Assignment> list) {
    agent_.set_assignments(api::AssignmentList{index, std::move(list)});
  }
  std::optional<api::InstanceStatus> find(const std::string& id) {
    for (auto& s : agent_.snapshot())
      if (s.id == id) return s;
    return std::nullopt;
  }
  InstanceState state(const std::string& id) { return find(id).value().state; }

  FakeRuntime rt_;
  std::deque<std::function<void()>> work_, probe_q_;
  int64_t now_ = 1'000'000;
  Agent agent_;
};

TEST_F(AgentTest, StartsAssignedInstancesAndReportsRunningOnFirstHealthyProbe) {
  assign(1, {assignment("demo-00000001"), assignment("demo-00000002")});
  agent_.step();
  EXPECT_EQ(state("demo-00000001"), InstanceState::kPending);
  drain(work_);
  EXPECT_EQ(state("demo-00000001"), InstanceState::kStarting);
  EXPECT_EQ(find("demo-00000001")->host_port, 20001);
  rt_.healthy = {"demo-00000001"};
  round();
  round();
  EXPECT_EQ(state("demo-00000001"), InstanceState::kRunning);
  EXPECT_EQ(state("demo-00000002"), InstanceState::kStarting);
  EXPECT_EQ(rt_.starts.size(), 2u);  // level-triggered, but each started once
  Held h = agent_.held();
  EXPECT_EQ(h.cpu_millis, 1000);
  EXPECT_EQ(h.ports, 2);
}

TEST_F(AgentTest, BadSpecFailsThatInstanceOnly) {
  assign(1, {assignment("demo-0000000a", "bad"), assignment("demo-0000000b")});
  rt_.healthy = {"demo-0000000b"};
  for (int i = 0; i < 3; ++i) round();
  auto bad = find("demo-0000000a");
  EXPECT_EQ(bad->state, InstanceState::kFailed);
  EXPECT_NE(bad->message.find("manifest unknown"), std::string::npos);
  EXPECT_EQ(state("demo-0000000b"), InstanceState::kRunning);
  for (int i = 0; i < 3; ++i) round();
  EXPECT_EQ(rt_.starts.size(), 2u);  // a failed one is not retried by the node
}

TEST_F(AgentTest, UnhealthyAfterThreeFailuresAndBack) {
  assign(1, {assignment("demo-00000003")});
  rt_.healthy = {"demo-00000003"};
  round();
  round();
  ASSERT_EQ(state("demo-00000003"), InstanceState::kRunning);
  rt_.healthy.clear();
  now_ += 2000;  // past the next probe (1.5 s after the last)
  for (int i = 0; i < 2; ++i) round(2000);
  EXPECT_EQ(state("demo-00000003"), InstanceState::kRunning);
  round(2000);
  EXPECT_EQ(state("demo-00000003"), InstanceState::kUnhealthy);
  rt_.healthy = {"demo-00000003"};
  round(2000);
  EXPECT_EQ(state("demo-00000003"), InstanceState::kRunning);
}

TEST_F(AgentTest, UnassignedCoolsThenStopsThenIsReportedOnceAndForgotten) {
  assign(1, {assignment("demo-00000004"), assignment("demo-00000005")});
  rt_.healthy = {"demo-00000004", "demo-00000005"};
  round();
  round();
  assign(2, {assignment("demo-00000005")});
  round(500);
  EXPECT_EQ(state("demo-00000004"), InstanceState::kCooling);
  round(500);
  EXPECT_EQ(state("demo-00000004"), InstanceState::kCooling);  // cooling lasts 1 s
  EXPECT_TRUE(rt_.stops.empty());
  round();
  EXPECT_EQ(rt_.stops, std::vector<std::string>{"demo-00000004"});
  EXPECT_EQ(state("demo-00000004"), InstanceState::kExited);
  auto report = agent_.report();
  ASSERT_EQ(report.size(), 2u);
  round();
  EXPECT_FALSE(find("demo-00000004").has_value());
  EXPECT_EQ(rt_.forgotten, std::vector<std::string>{"demo-00000004"});
  EXPECT_EQ(state("demo-00000005"), InstanceState::kRunning);
}

TEST_F(AgentTest, ExitedProcessStaysStoppedWhileAssigned) {
  assign(1, {assignment("demo-00000006")});
  rt_.healthy = {"demo-00000006"};
  round();
  round();
  rt_.exits["demo-00000006"] = ExitInfo{3, "exited with 3"};
  round();
  auto s = find("demo-00000006");
  EXPECT_EQ(s->state, InstanceState::kExited);
  EXPECT_EQ(s->exit_code, 3);
  for (int i = 0; i < 5; ++i) round();
  EXPECT_EQ(rt_.starts.size(), 1u);
  EXPECT_EQ(agent_.held().cpu_millis, 0);
}

TEST_F(AgentTest, AdoptedInstancesAreKeptUntilTheFirstAssignmentList) {
  std::vector<AdoptedInstance> adopted(2);
  adopted[0].assignment = assignment("demo-00000007");
  adopted[0].started = {"10.0.0.9", 20009};
  adopted[1].assignment = assignment("demo-00000008");
  adopted[1].started = {"10.0.0.8", 0};
  adopted[1].exited = ExitInfo{-1, "gone"};
  agent_.adopt(adopted);
  rt_.healthy = {"demo-00000007"};
  rt_.running = {"demo-00000007"};
  for (int i = 0; i < 3; ++i) round();
  EXPECT_EQ(state("demo-00000007"), InstanceState::kRunning);
  EXPECT_EQ(find("demo-00000007")->host_port, 20009);
  EXPECT_EQ(state("demo-00000008"), InstanceState::kExited);
  EXPECT_EQ(find("demo-00000008")->exit_code, -1);
  EXPECT_TRUE(rt_.starts.empty());
  assign(3, {assignment("demo-00000007")});
  (void)agent_.report();
  round();
  EXPECT_FALSE(find("demo-00000008").has_value());
  EXPECT_EQ(state("demo-00000007"), InstanceState::kRunning);
  EXPECT_TRUE(rt_.starts.empty());
}

TEST_F(AgentTest, OlderAssignmentListIsIgnored) {
  assign(5, {assignment("demo-00000009")});
  assign(4, {});
  EXPECT_EQ(agent_.assignments_index(), 5);
  round();
  EXPECT_EQ(rt_.starts.size(), 1u);
}

TEST(Resources, ParsesMeminfoAndCpuLists) {
  std::string meminfo =
      "MemTotal:       16318480 kB\nMemFree:         1234567 kB\nMemAvailable:   9000000 kB\n";
  auto m = parse_meminfo_total(meminfo);
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(*m, 16318480ll * 1024);
  EXPECT_FALSE(parse_meminfo_total("MemFree: 1 kB\n").ok());
  EXPECT_FALSE(parse_meminfo_total("MemTotal: lots kB\n").ok());
  EXPECT_EQ(*parse_cpu_list_count("0-3,8,10-11\n"), 7);
  EXPECT_EQ(*parse_cpu_list_count("0"), 1);
  EXPECT_FALSE(parse_cpu_list_count("").ok());
  EXPECT_FALSE(parse_cpu_list_count("3-1").ok());
  struct statvfs st {};
  st.f_blocks = 1000;
  st.f_frsize = 4096;
  EXPECT_EQ(disk_bytes(st), 4096000);
}

TEST(Resources, CapacityAndFreeSubtractReserveAndHeld) {
  api::Resources node{4000, 8ll << 30, 100ll << 30, 100};
  auto cap = capacity(node, Reserve{500, 1ll << 30});
  EXPECT_EQ(cap.cpu_millis, 3500);
  EXPECT_EQ(cap.memory_bytes, 7ll << 30);
  EXPECT_EQ(cap.ports, 100);
  auto f = free_resources(cap, Held{1000, 2ll << 30, 3});
  EXPECT_EQ(f.cpu_millis, 2500);
  EXPECT_EQ(f.memory_bytes, 5ll << 30);
  EXPECT_EQ(f.ports, 97);
  EXPECT_EQ(free_resources(cap, Held{9000, 0, 0}).cpu_millis, 0);
  EXPECT_EQ(capacity(node, Reserve{9000, 0}).cpu_millis, 0);
}

class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/qufop-agent-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  static std::string read(const std::string& p) {
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  std::string dir_;
};

TEST_F(TempDirTest, CopyTruncateRotationKeepsNFilesAndTheWriterAppends) {
  auto fd = open_output_log(dir_ + "/log");
  ASSERT_TRUE(fd.ok()) << fd.error().message;
  std::string path = dir_ + "/log/output.log";
  auto put = [&](const std::string& s) {
    ASSERT_EQ(::write(*fd, s.data(), s.size()), (ssize_t)s.size());
  };
  put("0123456789");
  EXPECT_FALSE(*rotate_if_larger(path, 10, 3));
  put("a");
  EXPECT_TRUE(*rotate_if_larger(path, 10, 3));
  EXPECT_EQ(read(path + ".1"), "0123456789a");
  EXPECT_EQ(read(path), "");
  put("second-generation");  // O_APPEND: at the new end, no hole
  EXPECT_EQ(read(path), "second-generation");
  EXPECT_TRUE(*rotate_if_larger(path, 10, 3));
  put("third-generation!");
  EXPECT_TRUE(*rotate_if_larger(path, 10, 3));
  EXPECT_EQ(read(path + ".1"), "third-generation!");
  EXPECT_EQ(read(path + ".2"), "second-generation");
  EXPECT_FALSE(std::filesystem::exists(path + ".3"));
  EXPECT_FALSE(*rotate_if_larger(dir_ + "/none.log", 10, 3));
  ::close(*fd);
}

TEST_F(TempDirTest, InstanceFilesRoundTripAndBadOnesAreSkipped) {
  InstanceFile f;
  f.assignment.id = "demo-0000000c";
  f.assignment.ufop = "demo";
  f.assignment.version = 2;
  f.assignment.spec.image = "demo";
  f.assignment.spec.reference = "2";
  f.assignment.spec.registry = "127.0.0.1:7400";
  f.sandbox_id = "qf-demo-0000000c";
  f.init_pid = 4242;
  f.init_start_time = 123456789012ull;
  f.run_dir = "/var/lib/qufop/noded/run/qf-demo-0000000c";
  f.cgroup_parent = "qufop";
  f.layers = {"/l/a", "/l/b"};
  f.log_dir = "/var/lib/qufop/noded/logs/demo-0000000c";
  f.ip = "10.88.0.5";
  f.host_port = 20005;
  ASSERT_TRUE(write_instance_file(dir_, f).ok());
  std::ofstream(dir_ + "/broken.json") << "{\"assignments\": 3";
  auto files = read_instance_files(dir_);
  ASSERT_TRUE(files.ok()) << files.error().message;
  ASSERT_EQ(files->files.size(), 1u);
  ASSERT_EQ(files->bad.size(), 1u);
  const auto& g = files->files[0];
  EXPECT_EQ(g.assignment.id, f.assignment.id);
  EXPECT_EQ(g.assignment.spec.registry, f.assignment.spec.registry);
  EXPECT_EQ(g.init_pid, 4242);
  EXPECT_EQ(g.init_start_time, 123456789012ull);
  EXPECT_EQ(g.layers, f.layers);
  EXPECT_EQ(g.host_port, 20005);
  ASSERT_TRUE(remove_instance_file(dir_, f.assignment.id).ok());
  EXPECT_EQ(read_instance_files(dir_)->files.size(), 0u);
}

TEST(ProcStat, ParsesStateAndStartTimePastAWeirdCommand) {
  std::string text =
      "4242 (we ird) (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
  auto st = parse_proc_stat(text);
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(st->state, 'S');
  EXPECT_EQ(st->start_time, 987654u);
  EXPECT_FALSE(parse_proc_stat("4242 (x) S 1 2").ok());
  auto self = read_proc_stat(::getpid());
  ASSERT_TRUE(self.ok());
  EXPECT_TRUE(same_process(::getpid(), self->start_time));
  EXPECT_FALSE(same_process(::getpid(), self->start_time + 1));
}

}  // namespace
}  // namespace qufop::noded
