// The keeper client against real backends on loopback: one suite, run against a real etcd and
// against qufop-keeper, so keeper is held to exactly what etcd does. Plus the client's own
// pieces that need no backend: endpoint parsing, watch stream framing and resumption, failover.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <cerrno>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "common/http_server.h"
#include "keeper/client.h"
#include "keeper/codec.h"
#include "tests/keeper_backends.h"

namespace qufop::keeper {
namespace {

using namespace std::chrono_literals;

#define ASSERT_OK(r) ASSERT_TRUE((r).ok()) << (r).error().code << ": " << (r).error().message
#define EXPECT_OK(r) EXPECT_TRUE((r).ok()) << (r).error().code << ": " << (r).error().message

template <class T>
void expect_etcd_error(const Result<T>& r, const char* message, int grpc_code) {
  ASSERT_FALSE(r.ok()) << "expected: " << message;
  EXPECT_TRUE(is_etcd_error(r.error(), message)) << r.error().code << ": " << r.error().message;
  EXPECT_EQ(r.error().sys_errno, grpc_code) << r.error().message;
}

// One backend of each kind per test process, shared by its tests (each under its own prefix,
// with revisions relative to where it starts), stopped when the tests end.
std::map<std::string, std::unique_ptr<test::Backend>>& backends() {
  static std::map<std::string, std::unique_ptr<test::Backend>> all;
  return all;
}

class StopBackends : public ::testing::Environment {
 public:
  void TearDown() override { backends().clear(); }
};
[[maybe_unused]] ::testing::Environment* const kStopBackends =
    ::testing::AddGlobalTestEnvironment(new StopBackends);

struct Watched {
  std::vector<Event> events;
  std::vector<int64_t> revisions;  // as handed to on_events, one per batch
  Result<void> result;
};

// Watches until `n` events arrived (or the watch ends on its own).
Watched watch_until(Client& c, const WatchCreateRequest& w, size_t n,
                    std::chrono::milliseconds idle = 15s) {
  Watched out;
  out.result = c.watch(
      w,
      [&](const std::vector<Event>& events, int64_t revision) {
        out.events.insert(out.events.end(), events.begin(), events.end());
        out.revisions.push_back(revision);
        return out.events.size() < n;
      },
      idle);
  return out;
}

WatchCreateRequest watch_key(std::string key, int64_t start, bool prev_kv = false) {
  WatchCreateRequest w;
  w.key = std::move(key);
  w.start_revision = start;
  w.prev_kv = prev_kv;
  return w;
}

Compare compare(Compare::Target target, Compare::Result result, std::string key, int64_t number,
                std::string value = "") {
  Compare c;
  c.target = target;
  c.result = result;
  c.key = std::move(key);
  c.number = number;
  c.value = std::move(value);
  return c;
}

// Polls until `done` holds or `timeout` passes.
bool eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(100ms);
  }
  return done();
}

HostPort closed_endpoint() { return {"127.0.0.1", test::free_port()}; }

class KeeperClientTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto& slot = backends()[GetParam()];
    // A backend that failed to start is not tried again by every test.
    static std::map<std::string, Error> start_errors;
    if (auto failed = start_errors.find(GetParam()); failed != start_errors.end()) {
      FAIL() << "starting " << GetParam() << " failed before: " << failed->second.message;
    }
    if (!slot) {
      auto started = test::start_backend(GetParam());
      if (!started && GetParam() == "etcd" && started.error().code == "not_found") {
        GTEST_SKIP() << started.error().message;
      }
      if (!started) start_errors.emplace(GetParam(), started.error());
      ASSERT_OK(started);
      slot = std::move(*started);
    }
    backend_ = slot.get();
    client_ = std::make_unique<Client>(std::vector{backend_->endpoint()});
    static int serial = 0;
    prefix_ = "/t/" + std::to_string(++serial) + "/" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name() + "/";
    // A backend that does not serve etcd's API fails every test here, loudly.
    auto r = client_->range(RangeRequest{prefix_, "", 0, 0, false, false});
    ASSERT_TRUE(r.ok()) << GetParam() << " does not serve the etcd v3 API: " << r.error().message
                        << "\n"
                        << backend_->log_tail();
    rev0_ = r->header.revision;
  }

  std::string k(std::string_view name) const { return prefix_ + std::string(name); }

  int64_t revision() {
    auto r = client_->range(RangeRequest{prefix_, "", 0, 0, false, false});
    EXPECT_OK(r);
    return r ? r->header.revision : -1;
  }

  RangeResponse range(std::string key, std::string end, int64_t limit = 0, int64_t rev = 0) {
    auto r = client_->range(RangeRequest{std::move(key), std::move(end), limit, rev, false, false});
    EXPECT_OK(r);
    return r ? *r : RangeResponse{};
  }

  int64_t put(std::string_view name, std::string_view value, int64_t lease = 0) {
    auto r = client_->put(k(name), value, lease);
    EXPECT_OK(r);
    return r ? *r : -1;
  }

  bool holds(const Compare& c) {
    TxnRequest t;
    t.compare = {c};
    auto r = client_->txn(t);
    EXPECT_OK(r);
    return r && r->succeeded;
  }

  test::Backend* backend_ = nullptr;
  std::unique_ptr<Client> client_;
  std::string prefix_;
  int64_t rev0_ = 0;
};

// --- KV -----------------------------------------------------------------------------------------

TEST_P(KeeperClientTest, PutAndGet) {
  EXPECT_EQ(put("a", "one"), rev0_ + 1);
  auto got = client_->get(k("a"));
  ASSERT_OK(got);
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(**got, (KeyValue{k("a"), "one", rev0_ + 1, rev0_ + 1, 1, 0}));

  auto missing = client_->get(k("nothing"));
  ASSERT_OK(missing);
  EXPECT_FALSE(missing->has_value());

  // Binary keys and values, and an empty value.
  std::string key = k(std::string("\0\xff", 2)), value("\0v\n", 3);
  ASSERT_OK(client_->put(key, value));
  ASSERT_OK(client_->put(k("empty"), ""));
  auto bin = client_->get(key);
  ASSERT_OK(bin);
  ASSERT_TRUE(bin->has_value());
  EXPECT_EQ((*bin)->value, value);
  auto empty = client_->get(k("empty"));
  ASSERT_OK(empty);
  ASSERT_TRUE(empty->has_value());
  EXPECT_EQ((*empty)->value, "");
}

TEST_P(KeeperClientTest, RevisionsAndVersions) {
  EXPECT_EQ(put("a", "1"), rev0_ + 1);
  EXPECT_EQ(put("b", "1"), rev0_ + 2);
  PutRequest again{k("a"), "2", 0, true, false, false};
  auto r = client_->put(again);
  ASSERT_OK(r);
  EXPECT_EQ(r->header.revision, rev0_ + 3);
  ASSERT_TRUE(r->prev_kv);
  EXPECT_EQ(*r->prev_kv, (KeyValue{k("a"), "1", rev0_ + 1, rev0_ + 1, 1, 0}));
  EXPECT_EQ(**client_->get(k("a")), (KeyValue{k("a"), "2", rev0_ + 1, rev0_ + 3, 2, 0}));

  // Without prev_kv asked, none comes back.
  auto plain = client_->put(PutRequest{k("a"), "3", 0, false, false, false});
  ASSERT_OK(plain);
  EXPECT_FALSE(plain->prev_kv);

  // Deleting and recreating starts a new generation: version 1, a new create revision.
  ASSERT_OK(client_->delete_range(DeleteRangeRequest{k("a"), "", false}));
  EXPECT_EQ(put("a", "new"), rev0_ + 6);
  EXPECT_EQ(**client_->get(k("a")), (KeyValue{k("a"), "new", rev0_ + 6, rev0_ + 6, 1, 0}));
  // Reads do not move the revision.
  EXPECT_EQ(revision(), rev0_ + 6);
}

TEST_P(KeeperClientTest, PrefixRangeWithLimitCountAndMore) {
  for (const char* name : {"p/c", "p/a", "p/e", "p/b", "p/d", "p", "p0", "o"}) put(name, name);
  std::string end = prefix_end(k("p/"));

  auto all = range(k("p/"), end);
  ASSERT_EQ(all.kvs.size(), 5u);
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(all.kvs[i].key, k(std::string("p/") + "abcde"[i]));
  EXPECT_EQ(all.kvs[0].value, "p/a");
  EXPECT_EQ(all.count, 5);
  EXPECT_FALSE(all.more);
  EXPECT_EQ(all.header.revision, rev0_ + 8);

  auto two = range(k("p/"), end, 2);
  ASSERT_EQ(two.kvs.size(), 2u);
  EXPECT_EQ(two.kvs[1].key, k("p/b"));
  EXPECT_TRUE(two.more);
  EXPECT_EQ(two.count, 5);

  auto exact = range(k("p/"), end, 5);
  EXPECT_EQ(exact.kvs.size(), 5u);
  EXPECT_FALSE(exact.more);

  // [key, range_end) and a single key.
  auto span = range(k("p/b"), k("p/d"));
  ASSERT_EQ(span.kvs.size(), 2u);
  EXPECT_EQ(span.kvs[0].key, k("p/b"));
  EXPECT_EQ(span.kvs[1].key, k("p/c"));
  EXPECT_EQ(range(k("p"), "").kvs.size(), 1u);

  // range_end "\0": every key from `key` on (other tests' keys sort later, so limit).
  auto from = range(k("p/d"), std::string(1, '\0'), 3);
  ASSERT_EQ(from.kvs.size(), 3u);
  EXPECT_EQ(from.kvs[0].key, k("p/d"));
  EXPECT_EQ(from.kvs[1].key, k("p/e"));
  EXPECT_EQ(from.kvs[2].key, k("p0"));
}

TEST_P(KeeperClientTest, KeysOnlyAndCountOnly) {
  put("x/1", "one");
  put("x/2", "two");
  RangeRequest r{k("x/"), prefix_end(k("x/")), 0, 0, true, false};
  auto keys = client_->range(r);
  ASSERT_OK(keys);
  ASSERT_EQ(keys->kvs.size(), 2u);
  EXPECT_EQ(keys->kvs[1], (KeyValue{k("x/2"), "", rev0_ + 2, rev0_ + 2, 1, 0}));
  EXPECT_EQ(keys->count, 2);

  r.keys_only = false;
  r.count_only = true;
  auto count = client_->range(r);
  ASSERT_OK(count);
  EXPECT_TRUE(count->kvs.empty());
  EXPECT_EQ(count->count, 2);
  EXPECT_FALSE(count->more);
}

TEST_P(KeeperClientTest, HistoricReads) {
  int64_t r1 = put("h", "v1");
  int64_t r2 = put("h", "v2");
  put("other", "x");
  auto del = client_->delete_range(DeleteRangeRequest{k("h"), "", false});
  ASSERT_OK(del);
  int64_t r4 = del->header.revision;

  auto at1 = range(k("h"), "", 0, r1);
  ASSERT_EQ(at1.kvs.size(), 1u);
  EXPECT_EQ(at1.kvs[0], (KeyValue{k("h"), "v1", r1, r1, 1, 0}));
  EXPECT_EQ(at1.header.revision, r4);  // the header tells the current revision
  auto at2 = range(k("h"), "", 0, r2 + 1);
  ASSERT_EQ(at2.kvs.size(), 1u);
  EXPECT_EQ(at2.kvs[0], (KeyValue{k("h"), "v2", r1, r2, 2, 0}));
  EXPECT_TRUE(range(k("h"), "", 0, r4).kvs.empty());
  EXPECT_TRUE(range(k("h"), "", 0, 0).kvs.empty());
  // Before the key existed.
  EXPECT_TRUE(range(k("h"), "", 0, rev0_).kvs.empty());
  // A prefix as of a past revision.
  auto prefix = range(prefix_, prefix_end(prefix_), 0, r2);
  ASSERT_EQ(prefix.kvs.size(), 1u);
  EXPECT_EQ(prefix.kvs[0].value, "v2");

  expect_etcd_error(client_->range(RangeRequest{k("h"), "", 0, r4 + 100, false, false}),
                    kErrFutureRev, kGrpcOutOfRange);
}

TEST_P(KeeperClientTest, DeleteKeyAndPrefix) {
  put("d/1", "a");
  put("d/2", "b");
  put("d/3", "c");
  put("e", "keep");

  auto one = client_->delete_range(DeleteRangeRequest{k("d/1"), "", true});
  ASSERT_OK(one);
  EXPECT_EQ(one->header.revision, rev0_ + 5);
  EXPECT_EQ(one->deleted, 1);
  ASSERT_EQ(one->prev_kvs.size(), 1u);
  EXPECT_EQ(one->prev_kvs[0], (KeyValue{k("d/1"), "a", rev0_ + 1, rev0_ + 1, 1, 0}));

  // Deleting nothing changes nothing, not even the revision.
  auto none = client_->delete_range(DeleteRangeRequest{k("d/1"), "", true});
  ASSERT_OK(none);
  EXPECT_EQ(none->deleted, 0);
  EXPECT_TRUE(none->prev_kvs.empty());
  EXPECT_EQ(none->header.revision, rev0_ + 5);

  // A prefix goes in one revision.
  auto prefix = client_->delete_range(DeleteRangeRequest{k("d/"), prefix_end(k("d/")), false});
  ASSERT_OK(prefix);
  EXPECT_EQ(prefix->deleted, 2);
  EXPECT_TRUE(prefix->prev_kvs.empty());
  EXPECT_EQ(prefix->header.revision, rev0_ + 6);
  EXPECT_EQ(range(k("d/"), prefix_end(k("d/"))).count, 0);
  EXPECT_TRUE(client_->get(k("e"))->has_value());
}

// --- transactions ---------------------------------------------------------------------------

TEST_P(KeeperClientTest, TxnComparesEveryTarget) {
  using T = Compare::Target;
  using R = Compare::Result;
  int64_t created = put("a", "1");
  int64_t modified = put("a", "2");
  put("b", "1");
  auto lease = client_->lease_grant(30);
  ASSERT_OK(lease);
  put("l", "x", lease->id);

  EXPECT_TRUE(holds(compare(T::kVersion, R::kEqual, k("a"), 2)));
  EXPECT_TRUE(holds(compare(T::kVersion, R::kGreater, k("a"), 1)));
  EXPECT_FALSE(holds(compare(T::kVersion, R::kLess, k("a"), 2)));
  EXPECT_FALSE(holds(compare(T::kVersion, R::kNotEqual, k("a"), 2)));
  EXPECT_TRUE(holds(compare(T::kCreate, R::kEqual, k("a"), created)));
  EXPECT_TRUE(holds(compare(T::kMod, R::kEqual, k("a"), modified)));
  EXPECT_TRUE(holds(compare(T::kMod, R::kGreater, k("a"), created)));
  EXPECT_FALSE(holds(compare(T::kMod, R::kLess, k("a"), created)));
  EXPECT_TRUE(holds(compare(T::kValue, R::kEqual, k("a"), 0, "2")));
  EXPECT_TRUE(holds(compare(T::kValue, R::kGreater, k("a"), 0, "1")));
  EXPECT_FALSE(holds(compare(T::kValue, R::kLess, k("a"), 0, "1")));
  EXPECT_TRUE(holds(compare(T::kValue, R::kNotEqual, k("a"), 0, "x")));
  EXPECT_TRUE(holds(compare(T::kLease, R::kEqual, k("l"), lease->id)));
  EXPECT_TRUE(holds(compare(T::kLease, R::kEqual, k("a"), 0)));

  // A missing key has version, create and mod revision and lease 0...
  EXPECT_TRUE(holds(compare(T::kVersion, R::kEqual, k("missing"), 0)));
  EXPECT_TRUE(holds(compare(T::kCreate, R::kEqual, k("missing"), 0)));
  EXPECT_TRUE(holds(compare(T::kMod, R::kEqual, k("missing"), 0)));
  EXPECT_TRUE(holds(compare(T::kLease, R::kEqual, k("missing"), 0)));
  EXPECT_FALSE(holds(compare(T::kVersion, R::kGreater, k("missing"), 0)));
  // ...but any value compare on it fails, whatever the operator (etcd's rule).
  EXPECT_FALSE(holds(compare(T::kValue, R::kEqual, k("missing"), 0, "")));
  EXPECT_FALSE(holds(compare(T::kValue, R::kNotEqual, k("missing"), 0, "x")));

  // Over a range every existing key must hold: a has version 2, b version 1.
  Compare over = compare(T::kVersion, R::kGreater, k("a"), 0);
  over.range_end = k("c");
  EXPECT_TRUE(holds(over));
  over.number = 1;
  EXPECT_FALSE(holds(over));

  // Several compares: all must hold.
  TxnRequest t;
  t.compare = {compare(T::kVersion, R::kEqual, k("a"), 2),
               compare(T::kVersion, R::kEqual, k("b"), 2)};
  auto r = client_->txn(t);
  ASSERT_OK(r);
  EXPECT_FALSE(r->succeeded);
  EXPECT_OK(client_->lease_revoke(lease->id));
}

TEST_P(KeeperClientTest, TxnRunsTheSuccessBranchInOneRevision) {
  put("b", "bee");
  int64_t before = rev0_ + 1;
  TxnRequest t;
  t.compare = {compare(Compare::Target::kVersion, Compare::Result::kEqual, k("a"), 0)};
  t.success = {{PutRequest{k("a"), "x", 0, false, false, false}},
               {RangeRequest{k("a"), "", 0, 0, false, false}},
               {DeleteRangeRequest{k("b"), "", true}},
               {PutRequest{k("c"), "y", 0, false, false, false}}};
  t.failure = {{RangeRequest{k("b"), "", 0, 0, false, false}}};
  auto r = client_->txn(t);
  ASSERT_OK(r);
  EXPECT_TRUE(r->succeeded);
  EXPECT_EQ(r->header.revision, before + 1);
  ASSERT_EQ(r->responses.size(), 4u);
  ASSERT_TRUE(std::holds_alternative<PutResponse>(r->responses[0].response));
  EXPECT_EQ(std::get<PutResponse>(r->responses[0].response).header.revision, before + 1);
  // The range sees the put before it in the same transaction.
  const auto& read = std::get<RangeResponse>(r->responses[1].response);
  ASSERT_EQ(read.kvs.size(), 1u);
  EXPECT_EQ(read.kvs[0], (KeyValue{k("a"), "x", before + 1, before + 1, 1, 0}));
  const auto& del = std::get<DeleteRangeResponse>(r->responses[2].response);
  EXPECT_EQ(del.deleted, 1);
  ASSERT_EQ(del.prev_kvs.size(), 1u);
  EXPECT_EQ(del.prev_kvs[0].value, "bee");
  EXPECT_TRUE(std::holds_alternative<PutResponse>(r->responses[3].response));
  // Every write of the transaction carries its one revision.
  EXPECT_EQ((*client_->get(k("c")))->mod_revision, before + 1);
  EXPECT_FALSE(client_->get(k("b"))->has_value());
  EXPECT_EQ(revision(), before + 1);
}

TEST_P(KeeperClientTest, TxnRunsTheFailureBranch) {
  put("a", "1");
  TxnRequest t;
  t.compare = {compare(Compare::Target::kValue, Compare::Result::kEqual, k("a"), 0, "2")};
  t.success = {{PutRequest{k("a"), "won", 0, false, false, false}}};
  t.failure = {{RangeRequest{k("a"), "", 0, 0, false, false}}};
  auto r = client_->txn(t);
  ASSERT_OK(r);
  EXPECT_FALSE(r->succeeded);
  ASSERT_EQ(r->responses.size(), 1u);
  const auto& read = std::get<RangeResponse>(r->responses[0].response);
  ASSERT_EQ(read.kvs.size(), 1u);
  EXPECT_EQ(read.kvs[0].value, "1");
  // A read-only branch does not move the revision.
  EXPECT_EQ(r->header.revision, rev0_ + 1);
  EXPECT_EQ(revision(), rev0_ + 1);

  // The failure branch may write too.
  t.failure = {{PutRequest{k("a"), "lost", 0, false, false, false}}};
  r = client_->txn(t);
  ASSERT_OK(r);
  EXPECT_FALSE(r->succeeded);
  EXPECT_EQ(r->header.revision, rev0_ + 2);
  EXPECT_EQ((*client_->get(k("a")))->value, "lost");

  // No compares: success.
  auto empty = client_->txn(TxnRequest{});
  ASSERT_OK(empty);
  EXPECT_TRUE(empty->succeeded);
  EXPECT_TRUE(empty->responses.empty());
}

TEST_P(KeeperClientTest, TxnRefusesDuplicateKeys) {
  TxnRequest t;
  t.success = {{PutRequest{k("a"), "1", 0, false, false, false}},
               {PutRequest{k("a"), "2", 0, false, false, false}}};
  expect_etcd_error(client_->txn(t), kErrDuplicateKey, kGrpcInvalidArgument);
  // A delete of a range that holds a put's key is a duplicate too.
  t.success = {{DeleteRangeRequest{k("a"), k("b"), false}},
               {PutRequest{k("a/x"), "2", 0, false, false, false}}};
  expect_etcd_error(client_->txn(t), kErrDuplicateKey, kGrpcInvalidArgument);
  // A read and a write of one key are fine.
  t.success = {{RangeRequest{k("a"), "", 0, 0, false, false}},
               {PutRequest{k("a"), "2", 0, false, false, false}}};
  EXPECT_OK(client_->txn(t));
  EXPECT_EQ(revision(), rev0_ + 1);
}

// --- compaction ------------------------------------------------------------------------------

TEST_P(KeeperClientTest, CompactionForgetsOlderRevisions) {
  int64_t r1 = put("c", "v1");
  int64_t r2 = put("c", "v2");
  int64_t r3 = put("c", "v3");
  auto compacted = client_->compact(r2);
  ASSERT_OK(compacted);
  EXPECT_EQ(compacted->header.revision, r3);

  expect_etcd_error(client_->range(RangeRequest{k("c"), "", 0, r1, false, false}), kErrCompacted,
                    kGrpcOutOfRange);
  auto at2 = range(k("c"), "", 0, r2);
  ASSERT_EQ(at2.kvs.size(), 1u);
  EXPECT_EQ(at2.kvs[0].value, "v2");
  expect_etcd_error(client_->compact(r2), kErrCompacted, kGrpcOutOfRange);
  expect_etcd_error(client_->compact(r1), kErrCompacted, kGrpcOutOfRange);
  expect_etcd_error(client_->compact(r3 + 100), kErrFutureRev, kGrpcOutOfRange);

  // A watch from a compacted revision fails with the compacted error...
  auto old = watch_until(*client_, watch_key(k("c"), r1), 1);
  ASSERT_FALSE(old.result.ok());
  EXPECT_TRUE(is_etcd_error(old.result.error(), kErrCompacted)) << old.result.error().message;
  EXPECT_TRUE(old.events.empty());
  // ...one from the compaction revision on still works.
  auto kept = watch_until(*client_, watch_key(k("c"), r2), 2);
  EXPECT_OK(kept.result);
  ASSERT_EQ(kept.events.size(), 2u);
  EXPECT_EQ(kept.events[0].kv.value, "v2");
  EXPECT_EQ(kept.events[1].kv.value, "v3");
}

// --- leases -----------------------------------------------------------------------------------

TEST_P(KeeperClientTest, LeaseGrantTimeToLiveKeepAliveAndRevoke) {
  auto lease = client_->lease_grant(30);
  ASSERT_OK(lease);
  EXPECT_NE(lease->id, 0);
  EXPECT_EQ(lease->ttl, 30);
  put("l/1", "a", lease->id);
  put("l/2", "b", lease->id);
  put("plain", "c");
  EXPECT_EQ((*client_->get(k("l/1")))->lease, lease->id);

  auto ttl = client_->lease_time_to_live(lease->id, true);
  ASSERT_OK(ttl);
  EXPECT_EQ(ttl->id, lease->id);
  EXPECT_EQ(ttl->granted_ttl, 30);
  EXPECT_GE(ttl->ttl, 28);
  EXPECT_LE(ttl->ttl, 30);
  std::sort(ttl->keys.begin(), ttl->keys.end());
  EXPECT_EQ(ttl->keys, (std::vector<std::string>{k("l/1"), k("l/2")}));
  auto no_keys = client_->lease_time_to_live(lease->id, false);
  ASSERT_OK(no_keys);
  EXPECT_TRUE(no_keys->keys.empty());

  auto renewed = client_->lease_keepalive(lease->id);
  ASSERT_OK(renewed);
  EXPECT_EQ(renewed->id, lease->id);
  EXPECT_EQ(renewed->ttl, 30);

  // Revoking deletes the lease's keys, all in one revision, as delete events.
  int64_t before = revision();
  ASSERT_OK(client_->lease_revoke(lease->id));
  EXPECT_EQ(revision(), before + 1);
  EXPECT_FALSE(client_->get(k("l/1"))->has_value());
  EXPECT_FALSE(client_->get(k("l/2"))->has_value());
  EXPECT_TRUE(client_->get(k("plain"))->has_value());
  WatchCreateRequest w = watch_key(k("l/"), before + 1);
  w.range_end = prefix_end(k("l/"));
  auto deletes = watch_until(*client_, w, 2);
  EXPECT_OK(deletes.result);
  ASSERT_EQ(deletes.events.size(), 2u);
  for (const auto& e : deletes.events) {
    EXPECT_EQ(e.type, Event::Type::kDelete);
    EXPECT_EQ(e.kv.mod_revision, before + 1);
  }

  auto gone = client_->lease_time_to_live(lease->id, true);
  ASSERT_OK(gone);
  EXPECT_EQ(gone->ttl, -1);
  EXPECT_TRUE(gone->keys.empty());
  expect_etcd_error(client_->lease_revoke(lease->id), kErrLeaseNotFound, kGrpcNotFound);
  // A keep-alive of a lease that is gone answers TTL 0.
  auto dead = client_->lease_keepalive(lease->id);
  ASSERT_OK(dead);
  EXPECT_EQ(dead->ttl, 0);
}

TEST_P(KeeperClientTest, LeaseWithChosenIdAndDuplicates) {
  int64_t id = 0x1000000 + (std::chrono::steady_clock::now().time_since_epoch().count() & 0xffffff);
  auto lease = client_->lease_grant(30, id);
  ASSERT_OK(lease);
  EXPECT_EQ(lease->id, id);
  expect_etcd_error(client_->lease_grant(30, id), kErrLeaseExists, kGrpcFailedPrecondition);
  EXPECT_OK(client_->lease_revoke(id));
}

TEST_P(KeeperClientTest, LeaseExpiresAndTakesItsKeys) {
  // etcd's shortest TTL is 2 s with its default election timeout (it grants 2 for 1).
  auto lease = client_->lease_grant(2);
  ASSERT_OK(lease);
  EXPECT_EQ(lease->ttl, 2);
  int64_t r = put("e", "short-lived", lease->id);
  EXPECT_TRUE(eventually([&] { return !client_->get(k("e"))->has_value(); }, 10s));
  auto ttl = client_->lease_time_to_live(lease->id);
  ASSERT_OK(ttl);
  EXPECT_EQ(ttl->ttl, -1);
  auto deleted = watch_until(*client_, watch_key(k("e"), r + 1), 1);
  EXPECT_OK(deleted.result);
  ASSERT_EQ(deleted.events.size(), 1u);
  EXPECT_EQ(deleted.events[0].type, Event::Type::kDelete);
  EXPECT_EQ(deleted.events[0].kv.key, k("e"));
}

TEST_P(KeeperClientTest, KeepAliveHandleKeepsTheLeaseUntilDestroyed) {
  auto lease = client_->lease_grant(2);
  ASSERT_OK(lease);
  std::atomic<bool> lost = false;
  auto handle = client_->keep_alive(lease->id, 2, [&] { lost = true; });
  put("kept", "x", lease->id);
  std::this_thread::sleep_for(4500ms);
  EXPECT_TRUE(client_->get(k("kept"))->has_value());
  auto ttl = client_->lease_time_to_live(lease->id);
  ASSERT_OK(ttl);
  EXPECT_GT(ttl->ttl, 0);
  handle.reset();
  EXPECT_FALSE(lost);
  EXPECT_TRUE(eventually([&] { return !client_->get(k("kept"))->has_value(); }, 10s));
}

TEST_P(KeeperClientTest, KeepAliveReportsALostLease) {
  auto lease = client_->lease_grant(3);
  ASSERT_OK(lease);
  std::atomic<int> lost = 0;
  auto handle = client_->keep_alive(lease->id, 3, [&] { ++lost; });
  ASSERT_OK(client_->lease_revoke(lease->id));
  EXPECT_TRUE(eventually([&] { return lost > 0; }, 5s));
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(lost, 1);  // once
}

// --- watch ------------------------------------------------------------------------------------

TEST_P(KeeperClientTest, WatchFromThePastWithPrevKv) {
  int64_t r1 = put("w", "1");
  int64_t r2 = put("w", "2");
  auto del = client_->delete_range(DeleteRangeRequest{k("w"), "", false});
  ASSERT_OK(del);
  int64_t r3 = del->header.revision;

  auto got = watch_until(*client_, watch_key(k("w"), r1, true), 3);
  EXPECT_OK(got.result);
  KeyValue v1{k("w"), "1", r1, r1, 1, 0}, v2{k("w"), "2", r1, r2, 2, 0};
  ASSERT_EQ(got.events.size(), 3u);
  EXPECT_EQ(got.events[0], (Event{Event::Type::kPut, v1, std::nullopt}));
  EXPECT_EQ(got.events[1], (Event{Event::Type::kPut, v2, v1}));
  // A delete carries the key and the deletion's revision only.
  EXPECT_EQ(got.events[2], (Event{Event::Type::kDelete, {k("w"), "", 0, r3, 0, 0}, v2}));
  EXPECT_EQ(got.revisions.back(), r3);

  // Without prev_kv none comes.
  auto plain = watch_until(*client_, watch_key(k("w"), r2), 2);
  ASSERT_EQ(plain.events.size(), 2u);
  EXPECT_FALSE(plain.events[0].prev_kv);
  EXPECT_FALSE(plain.events[1].prev_kv);
}

TEST_P(KeeperClientTest, WatchLiveEvents) {
  auto watcher = std::async(std::launch::async, [&] {
    return watch_until(*client_, watch_key(k("live"), rev0_ + 1, true), 3);
  });
  std::this_thread::sleep_for(300ms);
  int64_t r1 = put("live", "a");
  put("unrelated", "b");
  int64_t r2 = put("live", "b");
  ASSERT_OK(client_->delete_range(DeleteRangeRequest{k("live"), "", false}));
  auto got = watcher.get();
  EXPECT_OK(got.result);
  ASSERT_EQ(got.events.size(), 3u);
  EXPECT_EQ(got.events[0].kv, (KeyValue{k("live"), "a", r1, r1, 1, 0}));
  EXPECT_EQ(got.events[1].kv.mod_revision, r2);
  ASSERT_TRUE(got.events[1].prev_kv);
  EXPECT_EQ(got.events[1].prev_kv->value, "a");
  EXPECT_EQ(got.events[2].type, Event::Type::kDelete);
  ASSERT_TRUE(got.events[2].prev_kv);
  EXPECT_EQ(got.events[2].prev_kv->value, "b");
}

TEST_P(KeeperClientTest, WatchFromNowSeesOnlyLaterWrites) {
  put("now", "before");
  std::atomic<bool> seen = false;
  auto watcher = std::async(std::launch::async, [&] {
    auto w = watch_until(*client_, watch_key(k("now"), 0), 1);
    seen = true;
    return w;
  });
  // start_revision 0 means "after the watch is set up", which the test cannot observe:
  // keep writing until the watch reports one.
  std::vector<int64_t> writes;
  for (int i = 0; i < 100 && !seen; ++i) {
    writes.push_back(put("now", "after" + std::to_string(i)));
    std::this_thread::sleep_for(100ms);
  }
  auto got = watcher.get();
  EXPECT_OK(got.result);
  ASSERT_FALSE(got.events.empty());
  EXPECT_TRUE(got.events[0].kv.value.starts_with("after")) << got.events[0].kv.value;
  EXPECT_NE(std::find(writes.begin(), writes.end(), got.events[0].kv.mod_revision), writes.end());
}

TEST_P(KeeperClientTest, WatchFromAFutureRevisionWaitsForIt) {
  auto watcher = std::async(std::launch::async,
                            [&] { return watch_until(*client_, watch_key(k("f"), rev0_ + 2), 1); });
  std::this_thread::sleep_for(300ms);
  put("f", "first");
  int64_t r2 = put("f", "second");
  auto got = watcher.get();
  EXPECT_OK(got.result);
  ASSERT_EQ(got.events.size(), 1u);
  EXPECT_EQ(got.events[0].kv.mod_revision, r2);
  EXPECT_EQ(got.events[0].kv.value, "second");
}

TEST_P(KeeperClientTest, WatchOfAPrefixSeesOnlyItsKeys) {
  for (const char* name : {"a", "a/1", "a0", "b/x", "a/2", "a/"}) put(name, name);
  WatchCreateRequest w = watch_key(k("a/"), rev0_ + 1);
  w.range_end = prefix_end(k("a/"));
  auto got = watch_until(*client_, w, 3);
  EXPECT_OK(got.result);
  ASSERT_EQ(got.events.size(), 3u);
  EXPECT_EQ(got.events[0].kv.key, k("a/1"));
  EXPECT_EQ(got.events[1].kv.key, k("a/2"));
  EXPECT_EQ(got.events[2].kv.key, k("a/"));
  EXPECT_EQ(got.events[2].kv.mod_revision, rev0_ + 6);
}

TEST_P(KeeperClientTest, WatchResumesAfterTheLastRevisionSeen) {
  put("r", "1");
  auto first = watch_until(*client_, watch_key(k("r"), rev0_ + 1), 1);
  EXPECT_OK(first.result);  // ended by the callback
  ASSERT_EQ(first.events.size(), 1u);
  int64_t last = first.revisions.back();
  EXPECT_EQ(last, rev0_ + 1);

  put("r", "2");
  put("r", "3");
  auto second = watch_until(*client_, watch_key(k("r"), last + 1), 2);
  EXPECT_OK(second.result);
  ASSERT_EQ(second.events.size(), 2u);
  EXPECT_EQ(second.events[0].kv.value, "2");
  EXPECT_EQ(second.events[0].kv.mod_revision, last + 1);
  EXPECT_EQ(second.events[1].kv.value, "3");
}

TEST_P(KeeperClientTest, IdleWatchTimesOut) {
  auto got = watch_until(*client_, watch_key(k("silent"), 0), 1, 1000ms);
  ASSERT_FALSE(got.result.ok());
  EXPECT_EQ(got.result.error().code, "timeout") << got.result.error().message;
}

// --- cancelling a watch ---------------------------------------------------------------------

// Starts a watch of `key` from `start` on its own thread, with a long idle timeout.
std::future<Watched> watch_async(Client& c, WatchCreateRequest w, WatchCancel& cancel,
                                 std::atomic<int>& batches) {
  return std::async(std::launch::async, [&c, w = std::move(w), &cancel, &batches] {
    Watched out;
    out.result = c.watch(
        w,
        [&](const std::vector<Event>& events, int64_t revision) {
          out.events.insert(out.events.end(), events.begin(), events.end());
          out.revisions.push_back(revision);
          ++batches;
          return true;
        },
        60s, &cancel);
    return out;
  });
}

void expect_cancelled(const Result<void>& r) {
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "cancelled") << r.error().message;
  EXPECT_EQ(r.error().sys_errno, ECANCELED);
}

TEST_P(KeeperClientTest, WatchCancelledFromAnotherThreadEndsPromptly) {
  put("quiet", "1");
  WatchCancel cancel;
  std::atomic<int> batches = 0;
  auto watcher = watch_async(*client_, watch_key(k("quiet"), rev0_ + 1), cancel, batches);
  // Once the event arrived the stream is live and then silent: the watch waits on its socket.
  ASSERT_TRUE(eventually([&] { return batches > 0; }, 10s));
  std::this_thread::sleep_for(200ms);
  ASSERT_EQ(watcher.wait_for(0s), std::future_status::timeout) << "the watch ended by itself";
  auto start = std::chrono::steady_clock::now();
  cancel.cancel();
  // Generous: the idle timeout is a minute; a cancel that works takes milliseconds.
  ASSERT_EQ(watcher.wait_for(2s), std::future_status::ready) << "the cancel did not end the watch";
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, 2s);
  RecordProperty(
      "cancel_us",
      std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(took).count()));
  auto got = watcher.get();
  expect_cancelled(got.result);
  EXPECT_EQ(got.events.size(), 1u);
  EXPECT_TRUE(cancel.cancelled());
  // The client is unharmed.
  EXPECT_EQ(put("quiet", "2"), rev0_ + 2);
}

TEST_P(KeeperClientTest, WatchCancelledBeforeItStartsReturnsAtOnce) {
  put("early", "1");
  WatchCancel cancel;
  cancel.cancel();
  std::atomic<int> batches = 0;
  auto watcher = watch_async(*client_, watch_key(k("early"), rev0_ + 1), cancel, batches);
  ASSERT_EQ(watcher.wait_for(2s), std::future_status::ready);
  auto got = watcher.get();
  expect_cancelled(got.result);
  EXPECT_EQ(batches, 0);  // nothing delivered, though an event was there to deliver
}

TEST_P(KeeperClientTest, CancelAfterTheWatchEndedIsHarmless) {
  put("done", "1");
  WatchCancel cancel;
  auto got = watch_until(*client_, watch_key(k("done"), rev0_ + 1), 1);
  EXPECT_OK(got.result);
  cancel.cancel();
  cancel.cancel();  // twice too
  // Another watch without that token still runs; one given it returns at once.
  put("done", "2");
  auto again = watch_until(*client_, watch_key(k("done"), rev0_ + 1), 2);
  EXPECT_OK(again.result);
  EXPECT_EQ(again.events.size(), 2u);
  expect_cancelled(client_->watch(
      watch_key(k("done"), rev0_ + 1), [](const std::vector<Event>&, int64_t) { return true; }, 60s,
      &cancel));
}

// Cancels race watches at every stage (connecting, sending, waiting) while other threads'
// connections open and close: a cancel only ever ends its own watch, never a connection that
// took over a closed watch's file descriptor.
TEST_P(KeeperClientTest, CancelsRacingWatchesHitNothingElse) {
  put("race", "1");
  std::atomic<bool> done = false;
  std::atomic<int> failed_puts = 0;
  std::vector<std::thread> writers;
  for (int t = 0; t < 2; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; !done; ++i) {
        // A fresh client each time: a new socket, likely on an fd a watch just closed.
        Client c({backend_->endpoint()});
        if (!c.put(k("w" + std::to_string(t)), std::to_string(i))) ++failed_puts;
      }
    });
  }
  for (int i = 0; i < 30; ++i) {
    WatchCancel cancel;
    std::atomic<int> batches = 0;
    auto watcher = watch_async(*client_, watch_key(k("race"), rev0_ + 1), cancel, batches);
    std::this_thread::sleep_for(std::chrono::milliseconds(i % 10));
    cancel.cancel();
    // EXPECT, not ASSERT: the writers must be stopped below.
    EXPECT_EQ(watcher.wait_for(5s), std::future_status::ready) << "round " << i;
    expect_cancelled(watcher.get().result);
  }
  done = true;
  for (auto& t : writers) t.join();
  EXPECT_EQ(failed_puts, 0);
}

// --- errors -----------------------------------------------------------------------------------

TEST_P(KeeperClientTest, ErrorsComeBackAsEtcdErrors) {
  expect_etcd_error(client_->put(PutRequest{"", "v", 0, false, false, false}), kErrEmptyKey,
                    kGrpcInvalidArgument);
  expect_etcd_error(client_->range(RangeRequest{}), kErrEmptyKey, kGrpcInvalidArgument);
  expect_etcd_error(client_->delete_range(DeleteRangeRequest{}), kErrEmptyKey,
                    kGrpcInvalidArgument);
  expect_etcd_error(client_->put(k("big"), std::string((1u << 20) + 1, 'x')), kErrValueTooLarge,
                    kGrpcInvalidArgument);
  expect_etcd_error(client_->put(k("leased"), "v", 0x7eadbeef), kErrLeaseNotFound, kGrpcNotFound);
  expect_etcd_error(client_->lease_revoke(0x7eadbeef), kErrLeaseNotFound, kGrpcNotFound);
  TxnRequest t;
  t.success = {{PutRequest{k("leased"), "v", 0x7eadbeef, false, false, false}}};
  expect_etcd_error(client_->txn(t), kErrLeaseNotFound, kGrpcNotFound);
  // Nothing was written.
  EXPECT_EQ(revision(), rev0_);
  // A value just under the limit goes through.
  EXPECT_OK(client_->put(k("fits"), std::string(1000 * 1000, 'x')));
}

// --- connections ------------------------------------------------------------------------------

TEST_P(KeeperClientTest, FailsOverPastADeadEndpoint) {
  // A fresh client per call, so that each starts at the dead endpoint.
  HostPort dead = closed_endpoint();
  auto fresh = [&] { return std::make_unique<Client>(std::vector{dead, backend_->endpoint()}); };
  auto w = fresh()->put(k("f"), "v");  // a write: the dead endpoint refused the connection
  ASSERT_OK(w);
  EXPECT_EQ(*w, rev0_ + 1);
  auto r = fresh()->get(k("f"));
  ASSERT_OK(r);
  EXPECT_TRUE(r->has_value());
  auto watched = watch_until(*fresh(), watch_key(k("f"), rev0_ + 1), 1);
  EXPECT_OK(watched.result);
  EXPECT_EQ(watched.events.size(), 1u);
  auto lease = fresh()->lease_grant(30);
  ASSERT_OK(lease);
  EXPECT_OK(fresh()->lease_revoke(lease->id));
  // Once an endpoint answered, the client stays with it.
  auto c = fresh();
  ASSERT_OK(c->put(k("g"), "v"));
  EXPECT_OK(c->get(k("g")));
}

TEST_P(KeeperClientTest, ManyThreadsShareOneClient) {
  constexpr int kThreads = 8, kPuts = 20;
  std::vector<std::thread> threads;
  std::mutex mu;
  std::vector<int64_t> revisions;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPuts; ++i) {
        auto r = client_->put(k(std::to_string(t) + "/" + std::to_string(i)), "v");
        std::lock_guard lock(mu);
        revisions.push_back(r ? *r : -1);
      }
    });
  }
  for (auto& t : threads) t.join();
  std::sort(revisions.begin(), revisions.end());
  ASSERT_EQ(revisions.size(), size_t{kThreads * kPuts});
  for (size_t i = 0; i < revisions.size(); ++i) {
    EXPECT_EQ(revisions[i], rev0_ + 1 + static_cast<int64_t>(i));
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, KeeperClientTest, ::testing::Values("etcd", "keeper"),
                         [](const auto& info) { return info.param; });

// --- without a backend ------------------------------------------------------------------------

TEST(KeeperClientEndpoints, ParsesAListOfHttpUrls) {
  auto e = parse_endpoints("http://127.0.0.1:7100,http://h:2379");
  ASSERT_OK(e);
  ASSERT_EQ(e->size(), 2u);
  EXPECT_EQ((*e)[0].host, "127.0.0.1");
  EXPECT_EQ((*e)[0].port, 7100);
  EXPECT_EQ((*e)[1].host, "h");
  EXPECT_EQ((*e)[1].port, 2379);
  auto spaced = parse_endpoints(" http://a:1/ , http://[::1]:2");
  ASSERT_OK(spaced);
  EXPECT_EQ((*spaced)[0].host, "a");
  EXPECT_EQ((*spaced)[1].host, "::1");
}

TEST(KeeperClientEndpoints, ErrorsNameTheBadEndpoint) {
  auto message = [](std::string_view text) {
    auto r = parse_endpoints(text);
    EXPECT_FALSE(r.ok()) << text;
    return r ? std::string() : r.error().message;
  };
  EXPECT_EQ(message("https://h:2379"),
            "keeper endpoint 'https://h:2379': https is not supported yet; use http:// (put TLS in "
            "front of keeper on a proxy)");
  EXPECT_EQ(message("h:2379"), "keeper endpoint 'h:2379': expected http://HOST:PORT");
  EXPECT_EQ(message("http://h:1/v3"), "keeper endpoint 'http://h:1/v3': a path is not allowed");
  EXPECT_EQ(message("http://:7100"), "keeper endpoint 'http://:7100': no host given");
  EXPECT_EQ(message("http://h"), "keeper endpoint 'http://h': address 'h': expected HOST:PORT");
  EXPECT_EQ(message("http://h:0"),
            "keeper endpoint 'http://h:0': address 'h:0': port 0 is not allowed here");
  EXPECT_EQ(message(""),
            "keeper endpoints '': empty entry (expected http://HOST:PORT[,http://HOST:PORT...])");
  EXPECT_EQ(message("http://a:1,"),
            "keeper endpoints 'http://a:1,': empty entry (expected "
            "http://HOST:PORT[,http://HOST:PORT...])");
}

TEST(KeeperClientErrors, IsEtcdErrorMatchesExactlyOrAfterContext) {
  Error e{"etcd", kErrCompacted, kGrpcOutOfRange};
  EXPECT_TRUE(is_etcd_error(e, kErrCompacted));
  EXPECT_TRUE(is_etcd_error(e.wrap("loading nodes"), kErrCompacted));
  EXPECT_FALSE(is_etcd_error(e, kErrFutureRev));
  EXPECT_FALSE(is_etcd_error(Error{"io", kErrCompacted, 0}, kErrCompacted));
  EXPECT_FALSE(is_etcd_error(Error{"etcd", std::string("x") + kErrCompacted, 11}, kErrCompacted));
}

TEST(KeeperClientErrors, AllEndpointsDown) {
  HostPort a = closed_endpoint(), b = closed_endpoint();
  Client c({a, b}, {500ms, 2000ms});
  auto r = c.put("k", "v");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "unavailable");
  EXPECT_NE(r.error().message.find(a.str()), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find(b.str()), std::string::npos) << r.error().message;
  auto w = watch_until(c, watch_key("k", 0), 1);
  ASSERT_FALSE(w.result.ok());
  EXPECT_EQ(w.result.error().code, "unavailable");
}

// A stand-in etcd that answers /v3/watch with scripted chunks, to pin down how the client
// frames and resumes a stream. Each request's start_revision is recorded.
class FakeWatchServer {
 public:
  using Script = std::function<void(int call, http::Responder&)>;
  explicit FakeWatchServer(Script script) : script_(std::move(script)) {
    server_ = std::make_unique<http::Server>(ioc_, http::ServerOptions{});
    server_->route_async("POST", "/v3/watch", [this](http::Request req, http::Responder res) {
      auto create = json::parse(req.body);
      auto w =
          create ? codec::parse_watch_create(*create) : Result<WatchCreateRequest>(create.error());
      int call = 0;
      {
        std::lock_guard lock(mu_);
        starts_.push_back(w ? w->start_revision : -1);
        call = static_cast<int>(starts_.size()) - 1;
      }
      std::lock_guard lock(mu_);
      writers_.emplace_back([this, call, res = std::move(res)]() mutable {
        script_(call, res);
        res.finish();
      });
    });
    auto bound = server_->listen({"127.0.0.1", 0});
    if (!bound) std::abort();
    endpoint_ = *bound;
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~FakeWatchServer() {
    server_->stop();
    {
      std::lock_guard lock(mu_);
      for (auto& t : writers_) t.join();
    }
    work_.reset();
    ioc_.stop();
    thread_.join();
  }
  HostPort endpoint() const { return endpoint_; }
  std::vector<int64_t> starts() {
    std::lock_guard lock(mu_);
    return starts_;
  }

 private:
  Script script_;
  boost::asio::io_context ioc_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_{
      ioc_.get_executor()};
  std::unique_ptr<http::Server> server_;
  HostPort endpoint_;
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::thread> writers_;
  std::vector<int64_t> starts_;
};

std::string event_message(int64_t rev, std::string_view key64) {
  return R"({"result":{"header":{"revision":")" + std::to_string(rev) +
         R"("},"events":[{"kv":{"key":")" + std::string(key64) + R"(","mod_revision":")" +
         std::to_string(rev) + R"("}}]}})";
}

TEST(KeeperClientWatchStream, SplitsMessagesAcrossAndWithinChunks) {
  FakeWatchServer fake([](int, http::Responder& res) {
    std::string created = R"({"result":{"header":{"revision":"1"},"created":true}})";
    res.start_stream(200, "application/json");
    for (std::string piece :
         {created.substr(0, 20), created.substr(20) + "\n",
          event_message(2, "YQ==") + event_message(3, "Yg==") + "\n\r\n",
          event_message(4, "Yw==").substr(0, 50), event_message(4, "Yw==").substr(50) + "\n"}) {
      res.write(piece);
      std::this_thread::sleep_for(50ms);
    }
  });
  Client c({fake.endpoint()});
  auto got = watch_until(c, watch_key("a", 2), 3);
  EXPECT_OK(got.result);
  ASSERT_EQ(got.events.size(), 3u);
  EXPECT_EQ(got.events[0].kv.key, "a");
  EXPECT_EQ(got.events[1].kv.key, "b");
  EXPECT_EQ(got.events[2].kv.key, "c");
  EXPECT_EQ(got.revisions, (std::vector<int64_t>{2, 3, 4}));
}

TEST(KeeperClientWatchStream, ABusyStreamOutlivesTheIdleTimeout) {
  std::atomic<bool> stop = false;
  FakeWatchServer fake([&](int, http::Responder& res) {
    res.start_stream(200, "application/json");
    res.write(R"({"result":{"header":{"revision":"4"},"created":true}})"
              "\n");
    res.write(event_message(5, "YQ==") + "\n");
    // Progress notifications keep the stream alive well past the idle timeout...
    for (int i = 0; i < 10 && !stop && !res.closed(); ++i) {
      res.write(R"({"result":{"header":{"revision":"5"}}})"
                "\n");
      std::this_thread::sleep_for(100ms);
    }
    // ...and a later event still arrives on the same stream.
    res.write(event_message(6, "Yg==") + "\n");
    while (!stop && !res.closed()) std::this_thread::sleep_for(20ms);
  });
  Client c({fake.endpoint()});
  auto got = watch_until(c, watch_key("a", 0), 2, 300ms);
  stop = true;
  EXPECT_OK(got.result);
  ASSERT_EQ(got.events.size(), 2u);
  EXPECT_EQ(got.events[1].kv.mod_revision, 6);
  EXPECT_EQ(fake.starts(), (std::vector<int64_t>{0}));  // one stream, never resumed
}

TEST(KeeperClientWatchStream, SilenceEndsTheWatch) {
  FakeWatchServer fake([](int, http::Responder& res) {
    res.start_stream(200, "application/json");
    res.write(R"({"result":{"header":{"revision":"4"},"created":true}})"
              "\n");
    while (!res.closed()) std::this_thread::sleep_for(20ms);
  });
  Client c({fake.endpoint()});
  auto start = std::chrono::steady_clock::now();
  auto got = watch_until(c, watch_key("a", 0), 1, 400ms);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(got.result.ok());
  EXPECT_EQ(got.result.error().code, "timeout");
  EXPECT_GE(took, 400ms);
  EXPECT_LT(took, 1500ms);
}

TEST(KeeperClientWatchStream, ServerEndingTheStreamIsAnError) {
  FakeWatchServer fake([](int, http::Responder& res) {
    res.start_stream(200, "application/json");
    res.write(R"({"result":{"header":{"revision":"4"},"created":true}})"
              "\n");
  });
  Client c({fake.endpoint()});
  auto got = watch_until(c, watch_key("a", 0), 1);
  ASSERT_FALSE(got.result.ok());
  EXPECT_EQ(got.result.error().code, "unavailable") << got.result.error().message;
}

TEST(KeeperClientWatchStream, ACanceledWatchIsAnEtcdError) {
  FakeWatchServer fake([](int, http::Responder& res) {
    res.start_stream(200, "application/json");
    res.write(R"({"result":{"header":{"revision":"4"},"created":true}})"
              "\n"
              R"({"result":{"header":{},"canceled":true,"compact_revision":"3"}})"
              "\n");
    std::this_thread::sleep_for(300ms);  // etcd keeps the stream open after canceling
  });
  Client c({fake.endpoint()});
  auto got = watch_until(c, watch_key("a", 1), 1);
  ASSERT_FALSE(got.result.ok());
  EXPECT_TRUE(is_etcd_error(got.result.error(), kErrCompacted)) << got.result.error().message;
  EXPECT_EQ(got.result.error().sys_errno, kGrpcOutOfRange);
}

TEST(KeeperClientWatchStream, AnErrorStatusIsAnEtcdErrorOrSaysWhatAnswered) {
  FakeWatchServer fake([](int call, http::Responder& res) {
    if (call == 0) {
      // What etcd answers to a create request with a bad key.
      res.start_stream(500, "application/json");
      return res.write(
          R"({"error":"illegal base64 data at input byte 0","message":"illegal base64 data at input byte 0","code":2})");
    }
    res.start_stream(404, "text/plain");
    res.write("Not Found");
  });
  Client c({fake.endpoint()});
  auto etcd = watch_until(c, watch_key("a", 0), 1);
  ASSERT_FALSE(etcd.result.ok());
  EXPECT_TRUE(is_etcd_error(etcd.result.error(), "illegal base64 data at input byte 0"));
  EXPECT_EQ(etcd.result.error().sys_errno, 2);
  auto other = watch_until(c, watch_key("a", 0), 1);
  ASSERT_FALSE(other.result.ok());
  EXPECT_EQ(other.result.error().code, "io");
  EXPECT_EQ(other.result.error().message,
            "POST /v3/watch to " + fake.endpoint().str() + ": HTTP 404: Not Found");
}

// A stand-in etcd that answers puts and ranges with a bare header and counts them.
class FakeKv {
 public:
  FakeKv() {
    server_ = std::make_unique<http::Server>(ioc_, http::ServerOptions{});
    for (const char* path : {"/v3/kv/put", "/v3/kv/range"}) {
      server_->route("POST", path, [this](const http::Request&) {
        return http::Response{200,
                              "application/json",
                              {},
                              R"({"header":{"revision":")" + std::to_string(++calls_) + "\"}}"};
      });
    }
    auto bound = server_->listen({"127.0.0.1", 0});
    if (!bound) std::abort();
    endpoint_ = *bound;
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~FakeKv() {
    server_->stop();
    work_.reset();
    ioc_.stop();
    thread_.join();
  }
  HostPort endpoint() const { return endpoint_; }
  int calls() const { return calls_; }

 private:
  boost::asio::io_context ioc_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_{
      ioc_.get_executor()};
  std::unique_ptr<http::Server> server_;
  HostPort endpoint_;
  std::thread thread_;
  std::atomic<int> calls_ = 0;
};

TEST(KeeperClientFailover, AWriteOnAPooledConnectionIsNotSentElsewhere) {
  auto a = std::make_unique<FakeKv>();
  FakeKv b;
  Client c({a->endpoint(), b.endpoint()});
  ASSERT_OK(c.put("k", "v"));
  EXPECT_EQ(a->calls(), 1);
  a.reset();  // endpoint A goes away while the client holds a connection to it
  // A may have applied the write before it went: sending it to B could apply it twice.
  auto unsure = c.put("k", "v");
  ASSERT_FALSE(unsure.ok());
  EXPECT_EQ(unsure.error().code, "unavailable");
  EXPECT_EQ(b.calls(), 0);
  // A fresh connection to A is refused: provably unsent, so the next write moves on.
  ASSERT_OK(c.put("k", "v"));
  EXPECT_EQ(b.calls(), 1);
}

TEST(KeeperClientFailover, AReadMovesOnAtOnce) {
  auto a = std::make_unique<FakeKv>();
  FakeKv b;
  Client c({a->endpoint(), b.endpoint()});
  ASSERT_OK(c.get("k"));
  a.reset();
  ASSERT_OK(c.get("k"));
  EXPECT_EQ(b.calls(), 1);
}

}  // namespace
}  // namespace qufop::keeper
