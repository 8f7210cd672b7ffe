// keeper's store against etcd v3 semantics: exact revisions, MVCC reads, txns, leases with a
// fake clock, compaction, watches (replay + live, gap-free under concurrent writers), group
// commit, persistence, corruption, backup. Every test works in its own /tmp directory.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <tuple>

#include "keeper/store.h"

namespace qufop::keeper {
namespace {

using namespace std::chrono_literals;

template <class T>
T expect_ok(StoreResult<T> r) {
  if (auto* e = std::get_if<EtcdError>(&r)) {
    ADD_FAILURE() << "etcd error " << e->grpc_code << ": " << e->message;
    return T{};
  }
  return std::get<T>(std::move(r));
}

template <class T>
EtcdError expect_error(StoreResult<T> r) {
  if (auto* e = std::get_if<EtcdError>(&r)) return *e;
  ADD_FAILURE() << "expected an etcd error";
  return {};
}

RequestOp put_op(std::string key, std::string value) {
  PutRequest p;
  p.key = std::move(key);
  p.value = std::move(value);
  return RequestOp{p};
}

RequestOp range_op(std::string key, std::string end = "") {
  RangeRequest r;
  r.key = std::move(key);
  r.range_end = std::move(end);
  return RequestOp{r};
}

RequestOp delete_op(std::string key, std::string end = "") {
  DeleteRangeRequest d;
  d.key = std::move(key);
  d.range_end = std::move(end);
  return RequestOp{d};
}

Compare compare(Compare::Target target, Compare::Result result, std::string key, int64_t number = 0,
                std::string value = "", std::string range_end = "") {
  Compare c;
  c.target = target;
  c.result = result;
  c.key = std::move(key);
  c.number = number;
  c.value = std::move(value);
  c.range_end = std::move(range_end);
  return c;
}

std::vector<std::string> keys_of(const std::vector<KeyValue>& kvs) {
  std::vector<std::string> out;
  for (const auto& kv : kvs) out.push_back(kv.key);
  return out;
}

// Collects what a watch delivers; waits on a condition variable, never by sleeping.
class Collector {
 public:
  WatchCallbacks callbacks() {
    WatchCallbacks cb;
    cb.on_events = [this](const std::vector<Event>& events, int64_t revision) {
      std::lock_guard lock(mu_);
      batches_.emplace_back(revision, events);
      count_ += events.size();
      cv_.notify_all();
    };
    cb.on_compacted = [this](int64_t revision) {
      std::lock_guard lock(mu_);
      compacted_ = revision;
      cv_.notify_all();
    };
    return cb;
  }

  bool wait_for_count(size_t n, std::chrono::seconds timeout = 20s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return count_ >= n; });
  }

  bool wait_for_compacted(std::chrono::seconds timeout = 10s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return compacted_.has_value(); });
  }

  std::vector<std::pair<int64_t, std::vector<Event>>> batches() {
    std::lock_guard lock(mu_);
    return batches_;
  }

  std::vector<Event> events() {
    std::vector<Event> out;
    for (auto& [rev, events] : batches()) out.insert(out.end(), events.begin(), events.end());
    return out;
  }

  std::optional<int64_t> compacted() {
    std::lock_guard lock(mu_);
    return compacted_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<int64_t, std::vector<Event>>> batches_;
  size_t count_ = 0;
  std::optional<int64_t> compacted_;
};

class KeeperStore : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/qufop-store-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  StoreOptions options() const {
    StoreOptions o;
    o.path = path("keeper.db");
    o.clock = [now = now_ms_] {
      return std::chrono::steady_clock::time_point(std::chrono::milliseconds(now->load()));
    };
    return o;
  }

  std::unique_ptr<Store> open(StoreOptions o) {
    auto s = Store::open(std::move(o));
    if (!s.ok()) {
      ADD_FAILURE() << s.error().code << ": " << s.error().message;
      return nullptr;
    }
    return std::move(*s);
  }
  std::unique_ptr<Store> open() { return open(options()); }

  void advance(std::chrono::milliseconds d) { *now_ms_ += d.count(); }

  static int64_t put(Store& s, std::string key, std::string value, int64_t lease = 0) {
    PutRequest r;
    r.key = std::move(key);
    r.value = std::move(value);
    r.lease = lease;
    return expect_ok(s.put(r)).header.revision;
  }

  static std::optional<KeyValue> get(Store& s, std::string key, int64_t revision = 0) {
    RangeRequest r;
    r.key = std::move(key);
    r.revision = revision;
    auto resp = expect_ok(s.range(r));
    if (resp.kvs.empty()) return std::nullopt;
    return resp.kvs.front();
  }

  static RangeResponse range(Store& s, std::string key, std::string end, int64_t limit = 0,
                             int64_t revision = 0) {
    RangeRequest r;
    r.key = std::move(key);
    r.range_end = std::move(end);
    r.limit = limit;
    r.revision = revision;
    return expect_ok(s.range(r));
  }

  static DeleteRangeResponse del(Store& s, std::string key, std::string end = "",
                                 bool prev_kv = false) {
    DeleteRangeRequest r;
    r.key = std::move(key);
    r.range_end = std::move(end);
    r.prev_kv = prev_kv;
    return expect_ok(s.delete_range(r));
  }

  static int64_t grant(Store& s, int64_t ttl, int64_t id = 0) {
    LeaseGrantRequest r;
    r.ttl = ttl;
    r.id = id;
    return expect_ok(s.lease_grant(r)).id;
  }

  static std::unique_ptr<Watch> watch(Store& s, Collector& c, std::string key, std::string end,
                                      int64_t start, bool prev_kv = false) {
    WatchCreateRequest r;
    r.key = std::move(key);
    r.range_end = std::move(end);
    r.start_revision = start;
    r.prev_kv = prev_kv;
    return expect_ok(s.watch(r, c.callbacks()));
  }

  std::string dir_;
  std::shared_ptr<std::atomic<int64_t>> now_ms_ = std::make_shared<std::atomic<int64_t>>(1'000'000);
};

// ---- revisions and versions -------------------------------------------------------------------

TEST_F(KeeperStore, EmptyStoreIsAtRevisionOne) {
  auto s = open();
  EXPECT_EQ(s->revision(), 1);
  EXPECT_EQ(s->compact_revision(), 0);
  auto r = range(*s, "a", "");
  EXPECT_EQ(r.header.revision, 1);
  EXPECT_TRUE(r.kvs.empty());
  EXPECT_EQ(r.count, 0);
}

TEST_F(KeeperStore, RevisionsAndVersionsFollowEtcd) {
  auto s = open();
  EXPECT_EQ(put(*s, "a", "1"), 2);
  EXPECT_EQ(put(*s, "b", "1"), 3);
  EXPECT_EQ(*get(*s, "a"), (KeyValue{"a", "1", 2, 2, 1, 0}));
  auto d = del(*s, "a");
  EXPECT_EQ(d.deleted, 1);
  EXPECT_EQ(d.header.revision, 4);
  EXPECT_EQ(s->revision(), 4);
  EXPECT_FALSE(get(*s, "a"));
  // Recreated: version starts again at 1, create_revision is the new revision.
  EXPECT_EQ(put(*s, "a", "2"), 5);
  EXPECT_EQ(*get(*s, "a"), (KeyValue{"a", "2", 5, 5, 1, 0}));
  EXPECT_EQ(put(*s, "a", "3"), 6);
  EXPECT_EQ(*get(*s, "a"), (KeyValue{"a", "3", 5, 6, 2, 0}));
  // The same value again is still a new revision and version.
  EXPECT_EQ(put(*s, "a", "3"), 7);
  EXPECT_EQ(get(*s, "a")->version, 3);
}

TEST_F(KeeperStore, DeletingNothingDoesNotBumpTheRevision) {
  auto s = open();
  put(*s, "a", "1");
  auto d = del(*s, "zz", "zzz");
  EXPECT_EQ(d.deleted, 0);
  EXPECT_EQ(d.header.revision, 2);
  EXPECT_EQ(s->revision(), 2);
  EXPECT_EQ(put(*s, "b", "1"), 3);
}

TEST_F(KeeperStore, RangeFormsSortByBytes) {
  auto s = open();
  for (const char* k : {"b", "a/2", "a", "a/1", "c",
                        "\xff"
                        "z",
                        "a0"})
    put(*s, k, k);
  EXPECT_EQ(keys_of(range(*s, "a", "").kvs), (std::vector<std::string>{"a"}));
  EXPECT_EQ(keys_of(range(*s, "a/", prefix_end("a/")).kvs),
            (std::vector<std::string>{"a/1", "a/2"}));
  EXPECT_EQ(keys_of(range(*s, "a0", std::string(1, '\0')).kvs),
            (std::vector<std::string>{"a0", "b", "c",
                                      "\xff"
                                      "z"}));
  EXPECT_EQ(keys_of(range(*s, std::string(1, '\0'), std::string(1, '\0')).kvs).size(), 7u);
  EXPECT_EQ(keys_of(range(*s, "b", "c").kvs), (std::vector<std::string>{"b"}));
  EXPECT_TRUE(range(*s, "c", "b").kvs.empty());  // an end below the key is an empty range
}

TEST_F(KeeperStore, LimitCountMoreKeysOnlyCountOnly) {
  auto s = open();
  for (int i = 0; i < 5; ++i) put(*s, "k" + std::to_string(i), "value");
  auto r = range(*s, "k", "l", 2);
  EXPECT_EQ(keys_of(r.kvs), (std::vector<std::string>{"k0", "k1"}));
  EXPECT_TRUE(r.more);
  EXPECT_EQ(r.count, 5);
  r = range(*s, "k", "l", 5);
  EXPECT_EQ(r.kvs.size(), 5u);
  EXPECT_FALSE(r.more);
  EXPECT_EQ(r.count, 5);
  r = range(*s, "k", "l", 10);
  EXPECT_FALSE(r.more);
  EXPECT_EQ(r.count, 5);

  RangeRequest keys_only;
  keys_only.key = "k";
  keys_only.range_end = "l";
  keys_only.keys_only = true;
  auto ko = expect_ok(s->range(keys_only));
  ASSERT_EQ(ko.kvs.size(), 5u);
  EXPECT_EQ(ko.kvs[0].value, "");
  EXPECT_EQ(ko.kvs[0].mod_revision, 2);

  RangeRequest count_only = keys_only;
  count_only.count_only = true;
  count_only.limit = 1;
  auto co = expect_ok(s->range(count_only));
  EXPECT_TRUE(co.kvs.empty());
  EXPECT_EQ(co.count, 5);
  EXPECT_FALSE(co.more);
}

TEST_F(KeeperStore, ReadsAtPastRevisions) {
  auto s = open();
  put(*s, "a", "1");  // 2
  put(*s, "a", "2");  // 3
  del(*s, "a");       // 4
  put(*s, "a", "3");  // 5
  put(*s, "b", "1");  // 6
  EXPECT_EQ(*get(*s, "a", 2), (KeyValue{"a", "1", 2, 2, 1, 0}));
  EXPECT_EQ(*get(*s, "a", 3), (KeyValue{"a", "2", 2, 3, 2, 0}));
  EXPECT_FALSE(get(*s, "a", 4));
  EXPECT_EQ(*get(*s, "a", 5), (KeyValue{"a", "3", 5, 5, 1, 0}));
  EXPECT_FALSE(get(*s, "b", 5));
  auto r = range(*s, "a", "c", 1, 6);
  EXPECT_EQ(r.header.revision, 6);  // the header is the current revision, not the one read
  EXPECT_EQ(r.count, 2);
  EXPECT_TRUE(r.more);
  EXPECT_EQ(range(*s, "a", "c", 0, 3).count, 1);

  RangeRequest future;
  future.key = "a";
  future.revision = 7;
  auto e = expect_error(s->range(future));
  EXPECT_EQ(e.grpc_code, 11);
  EXPECT_EQ(e.message, kErrFutureRev);
}

TEST_F(KeeperStore, CompactionDropsOnlyUnreachableHistory) {
  auto s = open();
  put(*s, "a", "1");  // 2
  put(*s, "a", "2");  // 3
  put(*s, "b", "1");  // 4
  del(*s, "b");       // 5
  put(*s, "a", "3");  // 6
  auto c = expect_ok(s->compact(CompactionRequest{4}));
  EXPECT_EQ(c.header.revision, 6);
  EXPECT_EQ(s->compact_revision(), 4);
  EXPECT_EQ(s->revision(), 6);

  RangeRequest old;
  old.key = "a";
  old.revision = 3;
  auto e = expect_error(s->range(old));
  EXPECT_EQ(e.grpc_code, 11);
  EXPECT_EQ(e.message, kErrCompacted);
  // At and above the compact revision everything still reads as before.
  EXPECT_EQ(get(*s, "a", 4)->value, "2");
  EXPECT_EQ(get(*s, "b", 4)->value, "1");
  EXPECT_FALSE(get(*s, "b", 5));
  EXPECT_EQ(get(*s, "a", 6)->value, "3");

  e = expect_error(s->compact(CompactionRequest{4}));
  EXPECT_EQ(e.grpc_code, 11);
  EXPECT_EQ(e.message, kErrCompacted);
  e = expect_error(s->compact(CompactionRequest{3}));
  EXPECT_EQ(e.message, kErrCompacted);
  e = expect_error(s->compact(CompactionRequest{7}));
  EXPECT_EQ(e.grpc_code, 11);
  EXPECT_EQ(e.message, kErrFutureRev);
  // Compacting to the current revision is allowed; a deleted key's tombstone goes with it.
  expect_ok(s->compact(CompactionRequest{6}));
  EXPECT_EQ(get(*s, "a", 6)->value, "3");
  EXPECT_EQ(range(*s, "a", "c", 0, 6).count, 1);
}

// ---- put and delete options and errors ----------------------------------------------------

TEST_F(KeeperStore, PutErrorsLeaveTheRevisionAlone) {
  auto o = options();
  o.max_value_bytes = 8;
  o.max_key_bytes = 4;
  auto s = open(o);
  PutRequest r;
  auto e = expect_error(s->put(r));
  EXPECT_EQ(e.grpc_code, 3);
  EXPECT_EQ(e.message, kErrEmptyKey);
  r.key = "k";
  r.value = "123456789";
  e = expect_error(s->put(r));
  EXPECT_EQ(e.grpc_code, 3);
  EXPECT_EQ(e.message, kErrValueTooLarge);
  r.key = "12345";
  r.value = "v";
  e = expect_error(s->put(r));
  EXPECT_EQ(e.grpc_code, 3);
  EXPECT_NE(e.message.find("max_key_bytes = 4"), std::string::npos) << e.message;
  r.key = "k";
  r.lease = 42;
  e = expect_error(s->put(r));
  EXPECT_EQ(e.grpc_code, 5);
  EXPECT_EQ(e.message, kErrLeaseNotFound);
  r.lease = 0;
  r.value = "";
  r.ignore_value = true;
  e = expect_error(s->put(r));
  EXPECT_EQ(e.grpc_code, 3);
  EXPECT_EQ(e.message, "etcdserver: key not found");
  r.ignore_value = false;
  r.ignore_lease = true;
  e = expect_error(s->put(r));
  EXPECT_EQ(e.message, "etcdserver: key not found");
  r.lease = 5;  // ignore_lease with a lease, ignore_value with a value: refused up front
  EXPECT_EQ(expect_error(s->put(r)).message, "etcdserver: lease is provided");
  r.lease = 0;
  r.ignore_lease = false;
  r.ignore_value = true;
  r.value = "v";
  EXPECT_EQ(expect_error(s->put(r)).message, "etcdserver: value is provided");
  EXPECT_EQ(s->revision(), 1);

  RangeRequest empty_range;
  EXPECT_EQ(expect_error(s->range(empty_range)).message, kErrEmptyKey);
  DeleteRangeRequest empty_delete;
  EXPECT_EQ(expect_error(s->delete_range(empty_delete)).message, kErrEmptyKey);
}

TEST_F(KeeperStore, PutPrevKvIgnoreValueIgnoreLease) {
  auto s = open();
  put(*s, "a", "1");
  PutRequest r;
  r.key = "a";
  r.value = "2";
  r.prev_kv = true;
  auto resp = expect_ok(s->put(r));
  EXPECT_EQ(resp.header.revision, 3);
  ASSERT_TRUE(resp.prev_kv);
  EXPECT_EQ(*resp.prev_kv, (KeyValue{"a", "1", 2, 2, 1, 0}));
  r.key = "new";
  EXPECT_FALSE(expect_ok(s->put(r)).prev_kv);  // 4

  int64_t lease = grant(*s, 60);
  PutRequest attach;
  attach.key = "a";
  attach.ignore_value = true;
  attach.lease = lease;
  EXPECT_EQ(expect_ok(s->put(attach)).header.revision, 5);
  EXPECT_EQ(*get(*s, "a"), (KeyValue{"a", "2", 2, 5, 3, lease}));

  PutRequest keep_lease;
  keep_lease.key = "a";
  keep_lease.value = "3";
  keep_lease.ignore_lease = true;
  expect_ok(s->put(keep_lease));
  EXPECT_EQ(get(*s, "a")->lease, lease);
  EXPECT_EQ(get(*s, "a")->value, "3");
  EXPECT_EQ(expect_ok(s->lease_time_to_live(lease, true)).keys, std::vector<std::string>{"a"});

  put(*s, "a", "4");  // lease 0 detaches
  EXPECT_EQ(get(*s, "a")->lease, 0);
  EXPECT_TRUE(expect_ok(s->lease_time_to_live(lease, true)).keys.empty());
  expect_ok(s->lease_revoke(lease));
  EXPECT_EQ(get(*s, "a")->value, "4");  // no longer attached, so not deleted
}

TEST_F(KeeperStore, DeleteRangeReturnsPrevKvsInOneRevision) {
  auto s = open();
  put(*s, "p/b", "2");
  put(*s, "p/a", "1");
  put(*s, "q", "3");
  auto d = del(*s, "p/", prefix_end("p/"), true);
  EXPECT_EQ(d.header.revision, 5);
  EXPECT_EQ(d.deleted, 2);
  EXPECT_EQ(d.prev_kvs,
            (std::vector<KeyValue>{{"p/a", "1", 3, 3, 1, 0}, {"p/b", "2", 2, 2, 1, 0}}));
  EXPECT_FALSE(get(*s, "p/a"));
  EXPECT_TRUE(get(*s, "q"));
  EXPECT_EQ(del(*s, "q", std::string(1, '\0')).deleted, 1);  // from "q" to the end
}

// ---- txn ----------------------------------------------------------------------------------------

TEST_F(KeeperStore, TxnComparesOnMissingKeys) {
  auto s = open();
  using T = Compare::Target;
  using R = Compare::Result;
  auto holds = [&](Compare c) {
    TxnRequest t;
    t.compare.push_back(std::move(c));
    return expect_ok(s->txn(t)).succeeded;
  };
  EXPECT_TRUE(holds(compare(T::kVersion, R::kEqual, "missing", 0)));
  EXPECT_TRUE(holds(compare(T::kCreate, R::kEqual, "missing", 0)));
  EXPECT_TRUE(holds(compare(T::kMod, R::kEqual, "missing", 0)));
  EXPECT_TRUE(holds(compare(T::kLease, R::kEqual, "missing", 0)));
  EXPECT_TRUE(holds(compare(T::kMod, R::kLess, "missing", 5)));
  EXPECT_FALSE(holds(compare(T::kVersion, R::kGreater, "missing", 0)));
  // A value compare against a missing key is false whatever it asks (etcd).
  EXPECT_FALSE(holds(compare(T::kValue, R::kEqual, "missing", 0, "")));
  EXPECT_FALSE(holds(compare(T::kValue, R::kNotEqual, "missing", 0, "x")));
  EXPECT_EQ(s->revision(), 1);
}

TEST_F(KeeperStore, TxnComparesOnKeysAndRanges) {
  auto s = open();
  using T = Compare::Target;
  using R = Compare::Result;
  put(*s, "r/a", "1");  // 2
  put(*s, "r/b", "2");  // 3
  put(*s, "r/b", "3");  // 4
  auto holds = [&](Compare c) {
    TxnRequest t;
    t.compare.push_back(std::move(c));
    return expect_ok(s->txn(t)).succeeded;
  };
  EXPECT_TRUE(holds(compare(T::kValue, R::kEqual, "r/a", 0, "1")));
  EXPECT_TRUE(holds(compare(T::kValue, R::kLess, "r/a", 0, "2")));
  EXPECT_TRUE(holds(compare(T::kValue, R::kGreater, "r/a", 0, "")));
  EXPECT_TRUE(holds(compare(T::kMod, R::kEqual, "r/b", 4)));
  EXPECT_TRUE(holds(compare(T::kCreate, R::kEqual, "r/b", 3)));
  EXPECT_TRUE(holds(compare(T::kVersion, R::kEqual, "r/b", 2)));
  EXPECT_TRUE(holds(compare(T::kVersion, R::kNotEqual, "r/b", 1)));
  // Over a range: every key must satisfy it.
  EXPECT_TRUE(holds(compare(T::kVersion, R::kGreater, "r/", 0, "", prefix_end("r/"))));
  EXPECT_FALSE(holds(compare(T::kVersion, R::kEqual, "r/", 1, "", prefix_end("r/"))));
  EXPECT_TRUE(holds(compare(T::kMod, R::kLess, "r/", 5, "", prefix_end("r/"))));
  EXPECT_FALSE(holds(compare(T::kMod, R::kLess, "r/", 4, "", prefix_end("r/"))));
  // An empty range compares as one missing key.
  EXPECT_TRUE(holds(compare(T::kVersion, R::kEqual, "s/", 0, "", prefix_end("s/"))));
  EXPECT_FALSE(holds(compare(T::kValue, R::kEqual, "s/", 0, "", prefix_end("s/"))));

  TxnRequest all;  // all compares must hold
  all.compare = {compare(T::kValue, R::kEqual, "r/a", 0, "1"),
                 compare(T::kValue, R::kEqual, "r/b", 0, "nope")};
  EXPECT_FALSE(expect_ok(s->txn(all)).succeeded);
  EXPECT_EQ(s->revision(), 4);
}

TEST_F(KeeperStore, TxnAppliesOneBranchAtOneRevision) {
  auto s = open();
  using T = Compare::Target;
  using R = Compare::Result;
  put(*s, "x", "1");    // 2
  put(*s, "del", "1");  // 3
  TxnRequest t;
  t.compare = {compare(T::kValue, R::kEqual, "x", 0, "1")};
  t.success = {range_op("x"), put_op("x", "2"), put_op("y", "1"), range_op("x"), delete_op("del")};
  t.failure = {put_op("never", "1")};
  auto resp = expect_ok(s->txn(t));
  EXPECT_TRUE(resp.succeeded);
  EXPECT_EQ(resp.header.revision, 4);
  ASSERT_EQ(resp.responses.size(), 5u);
  auto& before = std::get<RangeResponse>(resp.responses[0].response);
  EXPECT_EQ(before.header.revision, 3);  // nothing written yet (etcd)
  EXPECT_EQ(before.kvs.at(0).value, "1");
  EXPECT_EQ(std::get<PutResponse>(resp.responses[1].response).header.revision, 4);
  auto& after = std::get<RangeResponse>(resp.responses[3].response);
  EXPECT_EQ(after.header.revision, 4);  // sees the txn's own put
  EXPECT_EQ(after.kvs.at(0), (KeyValue{"x", "2", 2, 4, 2, 0}));
  EXPECT_EQ(std::get<DeleteRangeResponse>(resp.responses[4].response).deleted, 1);
  EXPECT_EQ(get(*s, "y")->mod_revision, 4);
  EXPECT_FALSE(get(*s, "del"));
  EXPECT_FALSE(get(*s, "never"));
  EXPECT_EQ(s->revision(), 4);

  // Compare fails: the failure branch runs.
  auto failed = expect_ok(s->txn(t));
  EXPECT_FALSE(failed.succeeded);
  EXPECT_EQ(failed.header.revision, 5);
  EXPECT_EQ(get(*s, "never")->mod_revision, 5);
  EXPECT_EQ(get(*s, "x")->value, "2");

  // Only reads: no new revision.
  TxnRequest reads;
  reads.success = {range_op("x"), range_op("y")};
  auto r = expect_ok(s->txn(reads));
  EXPECT_TRUE(r.succeeded);
  EXPECT_EQ(r.header.revision, 5);
  EXPECT_EQ(std::get<RangeResponse>(r.responses[1].response).kvs.at(0).value, "1");
  // A write branch that changes nothing (a delete of nothing) does not bump it either.
  TxnRequest noop;
  noop.success = {delete_op("nothing-here")};
  EXPECT_EQ(expect_ok(s->txn(noop)).header.revision, 5);
  EXPECT_EQ(s->revision(), 5);
}

TEST_F(KeeperStore, TxnErrorsFailTheWholeTxn) {
  auto o = options();
  o.max_txn_ops = 3;
  auto s = open(o);
  using T = Compare::Target;
  using R = Compare::Result;
  put(*s, "a", "1");

  TxnRequest dup;
  dup.success = {put_op("k", "1"), put_op("k", "2")};
  auto e = expect_error(s->txn(dup));
  EXPECT_EQ(e.grpc_code, 3);
  EXPECT_EQ(e.message, kErrDuplicateKey);

  TxnRequest put_under_delete;
  put_under_delete.success = {delete_op("a", "c"), put_op("b", "1")};
  EXPECT_EQ(expect_error(s->txn(put_under_delete)).message, kErrDuplicateKey);
  put_under_delete.success = {put_op("b", "1"), delete_op("b")};
  EXPECT_EQ(expect_error(s->txn(put_under_delete)).message, kErrDuplicateKey);
  // A delete to the end ("\0") covers every key after it (etcd 3.4 misses this one and panics).
  put_under_delete.success = {delete_op("a", std::string(1, '\0')), put_op("z", "1")};
  EXPECT_EQ(expect_error(s->txn(put_under_delete)).message, kErrDuplicateKey);

  // etcd checks both branches, whichever runs.
  TxnRequest dup_in_failure;
  dup_in_failure.success = {put_op("k", "1")};
  dup_in_failure.failure = {put_op("k", "1"), put_op("k", "2")};
  EXPECT_EQ(expect_error(s->txn(dup_in_failure)).message, kErrDuplicateKey);

  TxnRequest many;
  many.success = {put_op("1", ""), put_op("2", ""), put_op("3", ""), put_op("4", "")};
  e = expect_error(s->txn(many));
  EXPECT_EQ(e.grpc_code, 3);
  EXPECT_EQ(e.message, kErrTooManyOps);

  TxnRequest empty_compare_key;
  empty_compare_key.compare = {compare(T::kVersion, R::kEqual, "", 0)};
  EXPECT_EQ(expect_error(s->txn(empty_compare_key)).message, kErrEmptyKey);

  // A bad lease in the chosen branch fails everything, including the put before it.
  PutRequest leased;
  leased.key = "l";
  leased.lease = 777;
  TxnRequest bad_lease;
  bad_lease.success = {put_op("first", "1"), RequestOp{leased}};
  e = expect_error(s->txn(bad_lease));
  EXPECT_EQ(e.grpc_code, 5);
  EXPECT_FALSE(get(*s, "first"));
  // ... but not in the branch that does not run.
  bad_lease.compare = {compare(T::kValue, R::kEqual, "a", 0, "1")};
  bad_lease.failure = bad_lease.success;
  bad_lease.success = {put_op("second", "1")};
  EXPECT_TRUE(expect_ok(s->txn(bad_lease)).succeeded);

  RangeRequest future;
  future.key = "a";
  future.revision = 100;
  TxnRequest future_read;
  future_read.success = {put_op("third", "1"), RequestOp{future}};
  EXPECT_EQ(expect_error(s->txn(future_read)).message, kErrFutureRev);
  EXPECT_FALSE(get(*s, "third"));
  EXPECT_EQ(s->revision(), 3);
}

// ---- leases -------------------------------------------------------------------------------------

TEST_F(KeeperStore, LeaseGrantKeepAliveTimeToLive) {
  auto s = open();
  auto granted = expect_ok(s->lease_grant(LeaseGrantRequest{10, 0}));
  EXPECT_GT(granted.id, 0);
  EXPECT_EQ(granted.ttl, 10);
  EXPECT_EQ(granted.header.revision, 1);  // leases do not touch the KV revision
  EXPECT_EQ(grant(*s, 30, 1234), 1234);
  auto e = expect_error(s->lease_grant(LeaseGrantRequest{30, 1234}));
  EXPECT_EQ(e.grpc_code, 9);
  EXPECT_EQ(e.message, kErrLeaseExists);
  EXPECT_EQ(expect_ok(s->lease_grant(LeaseGrantRequest{1, 0})).ttl, 2);  // etcd's minimum TTL

  auto ttl = expect_ok(s->lease_time_to_live(granted.id, false));
  EXPECT_EQ(ttl.id, granted.id);
  EXPECT_EQ(ttl.ttl, 10);
  EXPECT_EQ(ttl.granted_ttl, 10);
  advance(3500ms);
  EXPECT_EQ(expect_ok(s->lease_time_to_live(granted.id, false)).ttl, 6);  // 6.5 s, truncated
  auto ka = expect_ok(s->lease_keepalive(granted.id));
  EXPECT_EQ(ka.id, granted.id);
  EXPECT_EQ(ka.ttl, 10);
  EXPECT_EQ(expect_ok(s->lease_time_to_live(granted.id, false)).ttl, 10);

  auto unknown = expect_ok(s->lease_time_to_live(99, true));
  EXPECT_EQ(unknown.ttl, -1);
  EXPECT_EQ(unknown.granted_ttl, 0);
  e = expect_error(s->lease_keepalive(99));
  EXPECT_EQ(e.grpc_code, 5);
  EXPECT_EQ(e.message, kErrLeaseNotFound);
  e = expect_error(s->lease_revoke(99));
  EXPECT_EQ(e.grpc_code, 5);
  e = expect_error(s->lease_grant(LeaseGrantRequest{9'000'000'001, 0}));
  EXPECT_EQ(e.grpc_code, 11);
}

TEST_F(KeeperStore, ExpiredLeasesAreRevokedByTheClock) {
  auto s = open();
  int64_t lease = grant(*s, 5);
  int64_t other = grant(*s, 60);
  put(*s, "l/b", "1", lease);  // 2
  put(*s, "l/a", "1", lease);  // 3
  put(*s, "l/c", "1");         // 4
  put(*s, "l/d", "1", other);  // 5
  EXPECT_EQ(expect_ok(s->lease_time_to_live(lease, true)).keys,
            (std::vector<std::string>{"l/a", "l/b"}));
  Collector c;
  auto w = watch(*s, c, "l/", prefix_end("l/"), 0, true);

  advance(4s);
  s->expire_leases();
  EXPECT_EQ(s->revision(), 5);
  advance(1s);  // exactly at expiry
  s->expire_leases();
  EXPECT_EQ(s->revision(), 6);  // both keys in one revision
  EXPECT_FALSE(get(*s, "l/a"));
  EXPECT_FALSE(get(*s, "l/b"));
  EXPECT_TRUE(get(*s, "l/c"));
  EXPECT_TRUE(get(*s, "l/d"));
  EXPECT_EQ(expect_ok(s->lease_time_to_live(lease, false)).ttl, -1);

  ASSERT_TRUE(c.wait_for_count(2));
  auto batches = c.batches();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].first, 6);
  ASSERT_EQ(batches[0].second.size(), 2u);
  const auto& first = batches[0].second[0];
  EXPECT_EQ(first.type, Event::Type::kDelete);
  EXPECT_EQ(first.kv.key, "l/a");
  EXPECT_EQ(first.kv.mod_revision, 6);
  ASSERT_TRUE(first.prev_kv);
  EXPECT_EQ(first.prev_kv->lease, lease);
}

TEST_F(KeeperStore, KeepAliveOfAnExpiredLeaseRevokesIt) {
  auto s = open();
  int64_t lease = grant(*s, 3);
  put(*s, "k", "v", lease);
  advance(3s);
  auto e = expect_error(s->lease_keepalive(lease));
  EXPECT_EQ(e.grpc_code, 5);
  EXPECT_FALSE(get(*s, "k"));
  EXPECT_EQ(s->revision(), 3);
}

TEST_F(KeeperStore, RevokeDeletesAttachedKeysAsOneRevision) {
  auto s = open();
  int64_t lease = grant(*s, 60);
  int64_t empty = grant(*s, 60);
  put(*s, "r/1", "a", lease);
  put(*s, "r/2", "b", lease);
  Collector c;
  auto w = watch(*s, c, "r/", prefix_end("r/"), 0);
  EXPECT_EQ(expect_ok(s->lease_revoke(lease)).revision, 4);
  EXPECT_EQ(expect_ok(s->lease_revoke(empty)).revision, 4);  // no keys: no revision
  EXPECT_EQ(expect_error(s->lease_revoke(lease)).grpc_code, 5);
  ASSERT_TRUE(c.wait_for_count(2));
  auto batches = c.batches();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].first, 4);
  EXPECT_EQ(batches[0].second[0].kv.key, "r/1");
  EXPECT_EQ(batches[0].second[1].kv.key, "r/2");
  EXPECT_FALSE(batches[0].second[0].prev_kv);  // not asked for
  PutRequest revoked;
  revoked.key = "x";
  revoked.lease = lease;
  EXPECT_EQ(expect_error(s->put(revoked)).grpc_code, 5);
}

// ---- persistence, corruption, backup --------------------------------------------------------

TEST_F(KeeperStore, StateSurvivesReopen) {
  int64_t lease = 0;
  {
    auto s = open();
    lease = grant(*s, 20);
    put(*s, "a", "1");         // 2
    put(*s, "a", "2");         // 3
    put(*s, "b", "1", lease);  // 4
    put(*s, "c", "1");         // 5
    del(*s, "c");              // 6
    expect_ok(s->compact(CompactionRequest{3}));
    advance(15s);
  }
  advance(100s);
  auto s = open();
  EXPECT_EQ(s->revision(), 6);
  EXPECT_EQ(s->compact_revision(), 3);
  EXPECT_EQ(*get(*s, "a"), (KeyValue{"a", "2", 2, 3, 2, 0}));
  EXPECT_EQ(*get(*s, "b"), (KeyValue{"b", "1", 4, 4, 1, lease}));
  EXPECT_FALSE(get(*s, "c"));
  EXPECT_EQ(get(*s, "c", 5)->value, "1");
  // The lease's expiry restarts at open: its whole TTL is left.
  auto ttl = expect_ok(s->lease_time_to_live(lease, true));
  EXPECT_EQ(ttl.ttl, 20);
  EXPECT_EQ(ttl.keys, std::vector<std::string>{"b"});
  EXPECT_EQ(put(*s, "d", "1"), 7);
  advance(20s);
  s->expire_leases();
  EXPECT_FALSE(get(*s, "b"));
}

TEST_F(KeeperStore, SecondOpenOfTheSameFileIsRefused) {
  auto s = open();
  auto second = Store::open(options());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, "unavailable");
}

TEST_F(KeeperStore, GarbageFileIsRefusedAsCorrupt) {
  {
    std::ofstream f(path("keeper.db"), std::ios::binary);
    for (int i = 0; i < 512; ++i) f << "this is not a database at all! ";
  }
  auto s = Store::open(options());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, "io");
  EXPECT_NE(s.error().message.find("keeper database " + path("keeper.db") + " is corrupt"),
            std::string::npos)
      << s.error().message;
  EXPECT_NE(s.error().message.find("qufop-keeper restore BACKUP --data-dir DIR"),
            std::string::npos);
}

TEST_F(KeeperStore, DamagedPagesAreRefusedAsCorrupt) {
  {
    auto s = open();
    for (int t = 0; t < 3; ++t) {  // a few hundred keys, a few commits
      TxnRequest fill;
      for (int i = 0; i < 100; ++i) {
        fill.success.push_back(put_op("key/" + std::to_string(t * 100 + i), std::string(200, 'v')));
      }
      expect_ok(s->txn(fill));
    }
  }
  {
    std::fstream f(path("keeper.db"), std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(4096 * 3);
    std::string junk(2048, '\xab');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  auto s = Store::open(options());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, "io");
  EXPECT_NE(s.error().message.find("is corrupt (integrity_check: "), std::string::npos)
      << s.error().message;
}

TEST_F(KeeperStore, SchemaVersionIsRecordedAndANewerOneRefused) {
  { auto s = open(); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path("keeper.db").c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(
      sqlite3_prepare_v2(db, "SELECT v FROM meta WHERE k = 'schema_version'", -1, &stmt, nullptr),
      SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int64(stmt, 0), 3);
  sqlite3_finalize(stmt);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE meta SET v = 99 WHERE k = 'schema_version'", nullptr, nullptr,
                         nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto s = Store::open(options());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("schema version 99"), std::string::npos);
}

// A database written by schema version 1 (history indexed by key, no prev_rev) opens, and its
// history still serves reads at past revisions, prev_kv and compaction.
TEST_F(KeeperStore, SchemaVersionOneDatabaseIsMigrated) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path("keeper.db").c_str(), &db), SQLITE_OK);
  // Version 1's schema, then: a=1 @2; a=2 and b=1 @3 (one txn); delete a @4; a=3 @5
  // (re-created); b=2 @6.
  const char* v1 =
      "CREATE TABLE meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL);"
      "CREATE TABLE kv(key BLOB NOT NULL PRIMARY KEY, value BLOB NOT NULL,"
      "  create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, version INTEGER NOT NULL,"
      "  lease INTEGER NOT NULL) WITHOUT ROWID;"
      "CREATE INDEX kv_by_lease ON kv(lease) WHERE lease != 0;"
      "CREATE TABLE history(rev INTEGER NOT NULL, key BLOB NOT NULL, sub INTEGER NOT NULL,"
      "  value BLOB NOT NULL, create_rev INTEGER NOT NULL, version INTEGER NOT NULL,"
      "  lease INTEGER NOT NULL, deleted INTEGER NOT NULL, PRIMARY KEY(rev, key)) WITHOUT ROWID;"
      "CREATE INDEX history_by_key ON history(key, rev);"
      "CREATE TABLE leases(id INTEGER PRIMARY KEY, ttl INTEGER NOT NULL);"
      "INSERT INTO meta(k, v) VALUES ('revision', 6), ('compact_revision', -1),"
      "  ('schema_version', 1);"
      "INSERT INTO history VALUES (2, CAST('a' AS BLOB), 0, CAST('1' AS BLOB), 2, 1, 0, 0),"
      "  (3, CAST('a' AS BLOB), 0, CAST('2' AS BLOB), 2, 2, 0, 0),"
      "  (3, CAST('b' AS BLOB), 1, CAST('1' AS BLOB), 3, 1, 0, 0),"
      "  (4, CAST('a' AS BLOB), 0, x'', 0, 0, 0, 1),"
      "  (5, CAST('a' AS BLOB), 0, CAST('3' AS BLOB), 5, 1, 0, 0),"
      "  (6, CAST('b' AS BLOB), 0, CAST('2' AS BLOB), 3, 2, 0, 0);"
      "INSERT INTO kv VALUES (CAST('a' AS BLOB), CAST('3' AS BLOB), 5, 5, 1, 0),"
      "  (CAST('b' AS BLOB), CAST('2' AS BLOB), 3, 6, 2, 0);";
  ASSERT_EQ(sqlite3_exec(db, v1, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);

  auto s = open();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->revision(), 6);
  EXPECT_EQ(get(*s, "a", 2)->value, "1");
  EXPECT_EQ(get(*s, "a", 3)->value, "2");
  EXPECT_FALSE(get(*s, "a", 4));
  EXPECT_EQ(get(*s, "b", 5)->value, "1");
  EXPECT_EQ(range(*s, "a", "c", 0, 3).count, 2);
  EXPECT_EQ(range(*s, "a", "c", 0, 4).kvs, (std::vector<KeyValue>{{"b", "1", 3, 3, 1, 0}}));
  Collector c;
  auto w = watch(*s, c, "a", "c", 2, true);
  ASSERT_TRUE(c.wait_for_count(6));
  auto batches = c.batches();
  ASSERT_EQ(batches.size(), 5u);
  EXPECT_FALSE(batches[0].second.at(0).prev_kv);           // a created @2
  EXPECT_EQ(batches[1].second.at(0).prev_kv->value, "1");  // a=2 @3
  EXPECT_FALSE(batches[1].second.at(1).prev_kv);           // b created @3
  EXPECT_EQ(batches[2].second.at(0).prev_kv->value, "2");  // a deleted @4
  EXPECT_FALSE(batches[3].second.at(0).prev_kv);           // a re-created @5
  EXPECT_EQ(batches[4].second.at(0).prev_kv->value, "1");  // b=2 @6
  // New writes continue the chain; compaction keeps what reads at or after it need.
  EXPECT_EQ(put(*s, "a", "4"), 7);
  CompactionRequest compact;
  compact.revision = 5;
  expect_ok(s->compact(compact));
  EXPECT_EQ(get(*s, "a", 5)->value, "3");
  EXPECT_EQ(get(*s, "b", 5)->value, "1");
  EXPECT_EQ(get(*s, "a", 6)->value, "3");
  EXPECT_EQ(get(*s, "b", 6)->value, "2");
  EXPECT_EQ(get(*s, "a")->value, "4");
}

TEST_F(KeeperStore, BackupOpensAsTheSameStore) {
  int64_t lease = 0;
  auto s = open();
  lease = grant(*s, 40);
  for (int i = 0; i < 50; ++i)
    put(*s, "b/" + std::to_string(i), std::to_string(i), i % 2 ? lease : 0);
  del(*s, "b/7");
  auto backup = s->backup(path("backup.db"));
  ASSERT_TRUE(backup.ok()) << backup.error().message;
  EXPECT_FALSE(std::filesystem::exists(path("backup.db.tmp")));
  put(*s, "after", "backup");  // not in the copy

  auto o = options();
  o.path = path("backup.db");
  auto copy = open(o);
  ASSERT_TRUE(copy);
  EXPECT_EQ(copy->revision(), 52);
  auto original = range(*s, "b/", prefix_end("b/"));
  auto copied = range(*copy, "b/", prefix_end("b/"));
  EXPECT_EQ(copied.kvs, original.kvs);
  EXPECT_EQ(copied.count, 49);
  EXPECT_FALSE(get(*copy, "after"));
  EXPECT_EQ(get(*copy, "b/7", 51)->value, "7");
  EXPECT_EQ(expect_ok(copy->lease_time_to_live(lease, true)).keys.size(), 24u);  // b/7 was deleted
}

TEST_F(KeeperStore, FailedCommitFailsTheBatchAndKeepsTheRevision) {
  auto s = open();
  put(*s, "a", "1");
  sqlite3* other = nullptr;  // another process's connection holding the write lock
  ASSERT_EQ(sqlite3_open(path("keeper.db").c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  PutRequest r;
  r.key = "b";
  r.value = "1";
  auto e = expect_error(s->put(r));
  EXPECT_EQ(e.grpc_code, 14);
  EXPECT_NE(e.message.find("database is locked"), std::string::npos) << e.message;
  EXPECT_EQ(s->revision(), 2);
  sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(other);
  EXPECT_FALSE(get(*s, "b"));
  EXPECT_EQ(put(*s, "b", "1"), 3);
}

// ---- group commit -------------------------------------------------------------------------------

TEST_F(KeeperStore, ConcurrentPutsGetDistinctContiguousRevisions) {
  auto s = open();
  constexpr int kThreads = 32;
  constexpr int kPuts = 200;
  std::vector<std::vector<int64_t>> revisions(kThreads);
  std::atomic<int> unreadable{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPuts; ++i) {
        std::string key = "g/" + std::to_string(t) + "/" + std::to_string(i);
        int64_t rev = put(*s, key, "v");
        revisions[t].push_back(rev);
        // An acknowledged write is visible to the next read, at its revision.
        auto kv = get(*s, key);
        if (!kv || kv->mod_revision != rev) ++unreadable;
      }
    });
  }
  for (auto& t : threads) t.join();
  std::vector<int64_t> all;
  for (const auto& r : revisions) {
    EXPECT_TRUE(std::is_sorted(r.begin(), r.end()));
    all.insert(all.end(), r.begin(), r.end());
  }
  std::sort(all.begin(), all.end());
  ASSERT_EQ(all.size(), size_t{kThreads * kPuts});
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i], static_cast<int64_t>(i) + 2);
  EXPECT_EQ(s->revision(), 1 + kThreads * kPuts);
  EXPECT_EQ(unreadable.load(), 0);
  EXPECT_EQ(range(*s, "g/", prefix_end("g/")).count, kThreads * kPuts);
}

// The async API: one thread queues many writes without waiting; each completes exactly once,
// after it is durable and visible, at consecutive revisions in queue order. Requests that need
// no commit (refused by a check, read-only txns) complete on the caller's thread.
TEST_F(KeeperStore, AsyncWritesCompleteOnceInQueueOrderAfterTheirCommit) {
  auto s = open();
  constexpr int kPuts = 300;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int64_t> revisions;
  int invisible = 0;
  const auto caller = std::this_thread::get_id();
  int inline_completions = 0;
  for (int i = 0; i < kPuts; ++i) {
    PutRequest r;
    r.key = "async/" + std::to_string(i);
    r.value = "v";
    s->put_async(r, [&, key = r.key](StoreResult<PutResponse> out) {
      int64_t rev = expect_ok(std::move(out)).header.revision;
      bool seen = s->revision() >= rev;  // published before the completion runs
      std::lock_guard lock(mu);
      if (!seen) ++invisible;
      if (std::this_thread::get_id() == caller) ++inline_completions;
      revisions.push_back(rev);
      cv.notify_all();
    });
  }
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 30s, [&] { return revisions.size() == kPuts; }));
  }
  for (int i = 0; i < kPuts; ++i) EXPECT_EQ(revisions[static_cast<size_t>(i)], i + 2);
  EXPECT_EQ(invisible, 0);
  EXPECT_EQ(inline_completions, 0);
  EXPECT_EQ(get(*s, "async/7")->mod_revision, 9);

  bool refused = false;
  s->put_async(PutRequest{}, [&](StoreResult<PutResponse> out) {
    refused = expect_error(std::move(out)).message == kErrEmptyKey;
  });
  EXPECT_TRUE(refused);  // an empty key: answered inline, nothing queued
  TxnRequest read_only;
  read_only.success.push_back(range_op("async/1"));
  bool read = false;
  s->txn_async(read_only, [&](StoreResult<TxnResponse> out) {
    read = expect_ok(std::move(out)).responses.size() == 1;
  });
  EXPECT_TRUE(read);
  EXPECT_EQ(s->revision(), 1 + kPuts);
}

// ---- watch --------------------------------------------------------------------------------------

TEST_F(KeeperStore, WatchReplaysHistoryThenLiveWithPrevKv) {
  auto s = open();
  put(*s, "w/a", "1");  // 2
  put(*s, "w/a", "2");  // 3
  put(*s, "x", "1");    // 4: outside the range
  del(*s, "w/a");       // 5
  Collector c;
  auto w = watch(*s, c, "w/", prefix_end("w/"), 3, true);
  ASSERT_TRUE(c.wait_for_count(2));
  put(*s, "w/b", "1");  // 6
  put(*s, "w/b", "2");  // 7
  ASSERT_TRUE(c.wait_for_count(4));
  auto batches = c.batches();
  ASSERT_EQ(batches.size(), 4u);
  EXPECT_EQ(batches[0].first, 3);
  EXPECT_EQ(batches[1].first, 5);
  EXPECT_EQ(batches[2].first, 6);
  EXPECT_EQ(batches[3].first, 7);
  const Event& update = batches[0].second.at(0);
  EXPECT_EQ(update.type, Event::Type::kPut);
  EXPECT_EQ(update.kv, (KeyValue{"w/a", "2", 2, 3, 2, 0}));
  EXPECT_EQ(update.prev_kv->value, "1");
  const Event& deletion = batches[1].second.at(0);
  EXPECT_EQ(deletion.type, Event::Type::kDelete);
  EXPECT_EQ(deletion.kv, (KeyValue{"w/a", "", 0, 5, 0, 0}));
  EXPECT_EQ(deletion.prev_kv->value, "2");
  const Event& creation = batches[2].second.at(0);
  EXPECT_FALSE(creation.prev_kv);  // etcd sends none for a creation
  EXPECT_EQ(batches[3].second.at(0).prev_kv->value, "1");
}

TEST_F(KeeperStore, WatchFromZeroSeesOnlyNewRevisions) {
  auto s = open();
  put(*s, "a", "old");
  Collector c;
  auto w = watch(*s, c, "a", "", 0);
  put(*s, "a", "new");
  ASSERT_TRUE(c.wait_for_count(1));
  auto events = c.events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kv.value, "new");
  EXPECT_FALSE(events[0].prev_kv);
}

TEST_F(KeeperStore, TxnEventsArriveTogetherInOpOrder) {
  auto s = open();
  put(*s, "t/z", "0");
  Collector c;
  auto w = watch(*s, c, "t/", prefix_end("t/"), 0);
  TxnRequest t;
  t.success = {put_op("t/b", "1"), delete_op("t/z"), put_op("t/a", "1"), put_op("u", "1")};
  expect_ok(s->txn(t));
  ASSERT_TRUE(c.wait_for_count(3));
  auto batches = c.batches();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].first, 3);
  ASSERT_EQ(batches[0].second.size(), 3u);
  EXPECT_EQ(batches[0].second[0].kv.key, "t/b");
  EXPECT_EQ(batches[0].second[1].kv.key, "t/z");
  EXPECT_EQ(batches[0].second[1].type, Event::Type::kDelete);
  EXPECT_EQ(batches[0].second[2].kv.key, "t/a");
}

TEST_F(KeeperStore, WatchBelowTheCompactRevisionIsCompacted) {
  auto s = open();
  for (int i = 0; i < 6; ++i) put(*s, "c", std::to_string(i));  // 2..7
  expect_ok(s->compact(CompactionRequest{5}));
  Collector old;
  auto w1 = watch(*s, old, "c", "", 4);
  ASSERT_TRUE(old.wait_for_compacted());
  EXPECT_EQ(*old.compacted(), 5);
  Collector at;
  auto w2 = watch(*s, at, "c", "", 5);
  ASSERT_TRUE(at.wait_for_count(3));  // revisions 5, 6, 7
  put(*s, "c", "live");
  ASSERT_TRUE(at.wait_for_count(4));
  auto batches = at.batches();
  EXPECT_EQ(batches.front().first, 5);
  EXPECT_EQ(batches.back().second.at(0).kv.value, "live");
  EXPECT_TRUE(old.events().empty());  // nothing but on_compacted
  EXPECT_FALSE(at.compacted());
}

TEST_F(KeeperStore, DestroyingAWatchStopsItsCallbacks) {
  auto s = open();
  std::atomic<int> calls{0};
  std::atomic<bool> in_callback{false};
  std::atomic<bool> entered{false};
  WatchCallbacks cb;
  cb.on_events = [&](const std::vector<Event>&, int64_t) {
    in_callback = true;
    entered = true;
    std::this_thread::sleep_for(200ms);  // a slow consumer: the destructor must wait for it
    ++calls;
    in_callback = false;
  };
  WatchCreateRequest r;
  r.key = "k";
  auto w = expect_ok(s->watch(r, cb));
  put(*s, "k", "1");
  while (!entered) std::this_thread::yield();
  w.reset();
  EXPECT_FALSE(in_callback.load());
  int seen = calls.load();
  EXPECT_EQ(seen, 1);
  put(*s, "k", "2");
  // A later watch on the same key sees the put, so the cancelled one had every chance to.
  Collector later;
  auto w2 = watch(*s, later, "k", "", 3);
  ASSERT_TRUE(later.wait_for_count(1));
  EXPECT_EQ(calls.load(), seen);
}

TEST_F(KeeperStore, WatchCanCancelItselfFromItsCallback) {
  auto s = open();
  std::unique_ptr<Watch> w;
  std::mutex mu;
  std::atomic<int> calls{0};
  WatchCallbacks cb;
  cb.on_events = [&](const std::vector<Event>&, int64_t) {
    ++calls;
    std::lock_guard lock(mu);
    w.reset();
  };
  WatchCreateRequest r;
  r.key = "k";
  {
    std::lock_guard lock(mu);
    w = expect_ok(s->watch(r, cb));
  }
  put(*s, "k", "1");
  put(*s, "k", "2");
  Collector later;
  auto w2 = watch(*s, later, "k", "", 2);
  ASSERT_TRUE(later.wait_for_count(2));
  // Watchers are served independently: the first may be called after the second saw both.
  for (int i = 0; i < 500 && calls.load() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  put(*s, "k", "3");
  ASSERT_TRUE(later.wait_for_count(3));
  EXPECT_EQ(calls.load(), 1);
}

// What a watch over `range` must see: every recorded change in it at revision >= start.
struct Change {
  int64_t revision;
  std::string key;
  Event::Type type;
  bool operator==(const Change&) const = default;
};

bool in_range(const std::string& key, const std::string& begin, const std::string& end) {
  if (end.empty()) return key == begin;
  if (end == std::string(1, '\0')) return key >= begin;
  return key >= begin && key < end;
}

TEST_F(KeeperStore, EightWatchersSeeEveryMatchingEventOnceUnderConcurrentWrites) {
  auto s = open();
  std::mutex log_mu;
  std::vector<Change> log;
  auto record = [&](int64_t rev, std::string key, Event::Type type) {
    std::lock_guard lock(log_mu);
    log.push_back({rev, std::move(key), type});
  };
  auto write_some = [&](int seed, int n) {
    std::mt19937 rng(static_cast<unsigned>(seed));
    for (int i = 0; i < n; ++i) {
      std::string key = std::string("w/") + "abcd"[rng() % 4] + "/" + std::to_string(rng() % 6);
      if (rng() % 4 == 0) {
        auto d = del(*s, key);
        if (d.deleted == 1) record(d.header.revision, key, Event::Type::kDelete);
      } else {
        record(put(*s, key, std::to_string(i)), key, Event::Type::kPut);
      }
    }
  };
  write_some(1, 60);  // history before any watcher

  struct Spec {
    std::string key, end;
    bool prev_kv;
  };
  std::vector<Spec> specs = {
      {"w/", prefix_end("w/"), false},       {"w/a/", prefix_end("w/a/"), false},
      {"w/b/", prefix_end("w/b/"), false},   {"w/a/", "w/c/", false},
      {"w/c/", std::string(1, '\0'), false}, {"w/a/1", "", false},
      {"w/d/", prefix_end("w/d/"), true},    {"w/", prefix_end("w/"), true},
  };
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) writers.emplace_back([&, t] { write_some(100 + t, 150); });

  std::vector<std::unique_ptr<Collector>> collectors;
  std::vector<std::unique_ptr<Watch>> watches;
  std::vector<int64_t> starts;
  for (size_t i = 0; i < specs.size(); ++i) {
    // Registered while the writers run, each from a revision in the past.
    std::this_thread::sleep_for(10ms);
    int64_t start = std::max<int64_t>(2, s->revision() - static_cast<int64_t>(7 * i));
    collectors.push_back(std::make_unique<Collector>());
    watches.push_back(
        watch(*s, *collectors.back(), specs[i].key, specs[i].end, start, specs[i].prev_kv));
    starts.push_back(start);
  }
  for (auto& t : writers) t.join();

  std::sort(log.begin(), log.end(),
            [](const Change& a, const Change& b) { return a.revision < b.revision; });
  for (size_t i = 0; i < specs.size(); ++i) {
    std::vector<Change> want;
    for (const auto& c : log) {
      if (c.revision >= starts[i] && in_range(c.key, specs[i].key, specs[i].end)) want.push_back(c);
    }
    ASSERT_TRUE(collectors[i]->wait_for_count(want.size())) << "watcher " << i;
    auto batches = collectors[i]->batches();
    std::vector<Change> got;
    int64_t last = 0;
    for (const auto& [rev, events] : batches) {
      EXPECT_GT(rev, last) << "watcher " << i << ": revisions out of order";
      last = rev;
      for (const auto& e : events) {
        EXPECT_EQ(e.kv.mod_revision, rev);
        got.push_back({rev, e.kv.key, e.type});
        if (!specs[i].prev_kv) {
          EXPECT_FALSE(e.prev_kv);
        } else if (e.type == Event::Type::kDelete || e.kv.version > 1) {
          ASSERT_TRUE(e.prev_kv) << "watcher " << i << " rev " << rev;
          EXPECT_EQ(e.prev_kv->key, e.kv.key);
          if (e.type == Event::Type::kPut) {
            EXPECT_EQ(e.prev_kv->version, e.kv.version - 1);
          }
        }
      }
    }
    EXPECT_EQ(got, want) << "watcher " << i << " from " << starts[i];
  }
}

}  // namespace
}  // namespace qufop::keeper
