// keeper under SIGKILL: no acknowledged write is lost, revisions never go backwards, and
// watchers that resume from their last revision see every event exactly once, in order.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "common/http_client.h"
#include "keeper/client.h"
#include "tests/process.h"

namespace qufop {
namespace {

using namespace std::chrono_literals;
using keeper::Event;

class KeeperUnderFire : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::make_temp_dir("qufop-keeper-crash");
    port_ = test::free_port();
    endpoint_ = {{"127.0.0.1", port_}};
    start_keeper();
  }
  void TearDown() override {
    keeper_.reset();
    std::filesystem::remove_all(dir_);
  }

  void start_keeper() {
    keeper_ = std::make_unique<test::Process>(std::vector<std::string>{
        std::string(QUFOP_BINARY_DIR) + "/keeper/qufop-keeper", "--listen",
        "127.0.0.1:" + std::to_string(port_), "--data-dir", dir_, "--log-level", "warn"});
    for (int i = 0; i < 1000; ++i) {
      http::Client c("127.0.0.1", port_, {100ms, 500ms});
      auto r = c.get("/healthz");
      if (r && r->status == 200) return;
      ASSERT_FALSE(keeper_->wait(10ms)) << "keeper died: " << keeper_->err();
    }
    FAIL() << "keeper did not come up";
  }

  void kill_keeper(int sig) {
    keeper_->signal(sig);
    ASSERT_TRUE(keeper_->wait(10s));
  }

  std::string dir_;
  uint16_t port_ = 0;
  std::vector<HostPort> endpoint_;
  std::unique_ptr<test::Process> keeper_;
};

// key -> mod_revision of every key under prefix, and the store revision.
std::pair<std::map<std::string, int64_t>, int64_t> snapshot(keeper::Client& c,
                                                            const std::string& prefix) {
  auto r = c.range({prefix, keeper::prefix_end(prefix)});
  EXPECT_TRUE(r) << r.error().message;
  std::map<std::string, int64_t> out;
  if (!r) return {out, 0};
  for (const auto& kv : r->kvs) out[kv.key] = kv.mod_revision;
  return {out, r->header.revision};
}

TEST_F(KeeperUnderFire, NoAcknowledgedWriteIsLostAcrossSigkills) {
  std::mt19937 rng(20261121);
  std::map<std::string, int64_t> acked;
  int64_t last_revision = 0;
  const int kRounds = 50;
  for (int round = 0; round < kRounds; ++round) {
    test::Process writer({std::string(QUFOP_BINARY_DIR) + "/tests/keeper_writer",
                          "http://127.0.0.1:" + std::to_string(port_),
                          "crash/" + std::to_string(round) + "/", "8"});
    std::this_thread::sleep_for(std::chrono::milliseconds(30 + rng() % 250));
    bool kill_keeper_too = round % 2 == 0 || rng() % 2 == 0;
    if (kill_keeper_too) kill_keeper(SIGKILL);  // mid-batch, while the writer is writing
    writer.signal(SIGKILL);
    writer.wait(10s);
    std::istringstream lines(writer.out());
    for (std::string key; lines >> key;) {
      int64_t rev;
      if (!(lines >> rev)) break;  // a line cut by the kill was never acknowledged in full
      acked[key] = rev;
    }
    if (kill_keeper_too) start_keeper();
    keeper::Client client(endpoint_);
    auto [present, revision] = snapshot(client, "crash/");
    ASSERT_GE(revision, last_revision) << "revision went backwards in round " << round;
    last_revision = revision;
    for (const auto& [key, rev] : acked) {
      auto it = present.find(key);
      ASSERT_NE(it, present.end()) << "acknowledged " << key << " lost in round " << round;
      ASSERT_EQ(it->second, rev) << key;
      ASSERT_LE(rev, revision);
    }
  }
  EXPECT_GT(acked.size(), static_cast<size_t>(kRounds)) << "the writer hardly wrote anything";
}

// One watcher that resumes after each transport failure from its last revision + 1, and
// stops once the writes are over and its stream has been idle for a second.
struct ResumingWatcher {
  std::string prefix;
  std::vector<Event> seen;
  int64_t last_revision = 0;

  void run(const std::vector<HostPort>& ep, int64_t start, const std::atomic<bool>& writes_over) {
    keeper::Client client(ep, {200ms, 2000ms});
    last_revision = start - 1;
    while (true) {
      bool over = writes_over;  // read before the call: an idle stream after it means caught up
      keeper::WatchCreateRequest req{prefix, keeper::prefix_end(prefix), last_revision + 1};
      auto r = client.watch(
          req,
          [&](const std::vector<Event>& events, int64_t) {
            for (const auto& e : events) seen.push_back(e);
            if (!events.empty()) last_revision = events.back().kv.mod_revision;
            return true;
          },
          1s);
      if (over && !r) return;
      if (!r) std::this_thread::sleep_for(20ms);
    }
  }
};

TEST_F(KeeperUnderFire, WatchersSeeEveryEventOnceInOrderAcrossRestarts) {
  keeper::Client client(endpoint_);
  auto start = client.put("w-start", "x");
  ASSERT_TRUE(start);
  const std::vector<std::string> prefixes = {"w/",    "w/a/", "w/a/b/", "w/b/",
                                             "w/b/x", "w/c/", "w/a/",   "w/"};
  std::vector<ResumingWatcher> watchers(prefixes.size());
  std::atomic<bool> writes_over{false};
  std::vector<std::thread> watch_threads;
  for (size_t i = 0; i < prefixes.size(); ++i) {
    watchers[i].prefix = prefixes[i];
    watch_threads.emplace_back([&, i] { watchers[i].run(endpoint_, *start + 1, writes_over); });
  }
  std::atomic<bool> stop_writing{false};
  std::vector<std::thread> writers;
  const std::vector<std::string> write_prefixes = {"w/a/", "w/a/b/", "w/b/", "w/b/x", "w/c/", "v/"};
  for (size_t t = 0; t < write_prefixes.size(); ++t) {
    writers.emplace_back([&, t] {
      keeper::Client c(endpoint_, {200ms, 2000ms});
      for (int i = 0; !stop_writing; ++i) {
        if (!c.put(write_prefixes[t] + std::to_string(i), "v")) std::this_thread::sleep_for(10ms);
      }
    });
  }
  std::this_thread::sleep_for(700ms);
  kill_keeper(SIGTERM);
  start_keeper();
  std::this_thread::sleep_for(700ms);
  kill_keeper(SIGKILL);
  start_keeper();
  std::this_thread::sleep_for(700ms);
  stop_writing = true;
  for (auto& t : writers) t.join();
  auto [truth, final_revision] = snapshot(client, "w/");
  writes_over = true;
  for (auto& t : watch_threads) t.join();
  for (const auto& w : watchers) {
    std::vector<std::pair<int64_t, std::string>> expected;
    for (const auto& [key, rev] : truth) {
      if (key.rfind(w.prefix, 0) == 0) expected.emplace_back(rev, key);
    }
    std::sort(expected.begin(), expected.end());
    ASSERT_EQ(w.seen.size(), expected.size()) << "watcher on " << w.prefix;
    for (size_t i = 0; i < expected.size(); ++i) {
      ASSERT_EQ(w.seen[i].kv.key, expected[i].second) << w.prefix << " event " << i;
      ASSERT_EQ(w.seen[i].kv.mod_revision, expected[i].first);
      ASSERT_EQ(w.seen[i].type, Event::Type::kPut);
    }
  }
  EXPECT_GT(truth.size(), 100u);
}

}  // namespace
}  // namespace qufop
