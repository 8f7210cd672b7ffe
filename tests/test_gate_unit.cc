// The gate's pure parts: instance choice and warm-up weights, the token buckets (per user and
// per client address), the per-UFOP queue, access rules, and the routing table built from keeper
// records. No sockets, no clock. The replay set is common/replay.h (tests/test_auth.cc).
#include <gtest/gtest.h>

#include <cstring>

#include "common/json.h"
#include "gate/access.h"
#include "gate/balancer.h"
#include "gate/http_scan.h"
#include "gate/limits.h"
#include "gate/queue.h"
#include "gate/table.h"

namespace qufop::gate {
namespace {

InstancePtr make(std::string id, int concurrency = 1, int64_t since = 0, int64_t warmup = 0) {
  return std::make_shared<Instance>(std::move(id), "127.0.0.1", 9100, concurrency, since, warmup);
}

TEST(WarmupWeight, RampsFromTenPercentToFull) {
  EXPECT_DOUBLE_EQ(warmup_weight(1000, 0, 1000), 1.0);      // no warm-up
  EXPECT_DOUBLE_EQ(warmup_weight(0, 5000, 1000), 1.0);      // no start time
  EXPECT_DOUBLE_EQ(warmup_weight(1000, 10000, 1000), 0.1);  // just started
  EXPECT_DOUBLE_EQ(warmup_weight(1000, 10000, 500), 0.1);   // clock skew: not negative
  EXPECT_NEAR(warmup_weight(1000, 10000, 6000), 0.55, 1e-9);
  EXPECT_DOUBLE_EQ(warmup_weight(1000, 10000, 11000), 1.0);
}

// Sequential requests (nothing outstanding): shares follow the weights.
double share_of_new(int64_t now) {
  Members m = {make("old"), make("new", 1, 1000, 10000)};
  Rng rng(7);
  int to_new = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    Instance* got = pick_and_claim(m, now, rng);
    EXPECT_NE(got, nullptr);
    if (got == m[1].get()) ++to_new;
    got->release();
  }
  return static_cast<double>(to_new) / n;
}

TEST(Balancer, NewInstanceShareFollowsWarmup) {
  EXPECT_NEAR(share_of_new(1000), 0.1 / 1.1, 0.02);
  EXPECT_NEAR(share_of_new(6000), 0.55 / 1.55, 0.02);
  EXPECT_NEAR(share_of_new(20000), 0.5, 0.02);
}

TEST(Balancer, PrefersTheLessLoaded) {
  Members m = {make("a", 4), make("b", 4)};
  Rng rng(1);
  ASSERT_TRUE(m[0]->try_claim());
  ASSERT_TRUE(m[0]->try_claim());
  for (int i = 0; i < 50; ++i) {
    Instance* got = pick_and_claim(m, 0, rng);
    ASSERT_EQ(got, m[1].get());
    got->release();
  }
}

TEST(Balancer, RespectsConcurrencyEjectionAndSkip) {
  Members m = {make("a"), make("b")};
  Rng rng(3);
  Instance* first = pick_and_claim(m, 0, rng);
  Instance* second = pick_and_claim(m, 0, rng);
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  EXPECT_NE(first, second);
  EXPECT_EQ(pick_and_claim(m, 0, rng), nullptr);  // both full
  first->release();
  second->release();
  EXPECT_EQ(pick_and_claim(m, 0, rng, m[0].get()), m[1].get());
  m[1]->release();
  m[1]->record_failure(100, 2, 1000);
  EXPECT_FALSE(m[1]->ejected(100));
  m[1]->record_failure(100, 2, 1000);
  EXPECT_TRUE(m[1]->ejected(500));
  EXPECT_FALSE(m[1]->ejected(1100));
  for (int i = 0; i < 20; ++i) {
    Instance* got = pick_and_claim(m, 500, rng);
    ASSERT_EQ(got, m[0].get());
    got->release();
  }
  EXPECT_FALSE(any_routable(m, 500, m[0].get()));
  EXPECT_TRUE(any_routable(m, 1100, m[0].get()));
}

TEST(TokenBucket, BurstThenRate) {
  TokenBucket b(2, 3);  // 2/s, burst 3
  EXPECT_TRUE(b.take(1000));
  EXPECT_TRUE(b.take(1000));
  EXPECT_TRUE(b.take(1000));
  EXPECT_FALSE(b.take(1000));
  EXPECT_EQ(b.wait_ms(1000), 500);
  EXPECT_FALSE(b.take(1400));
  EXPECT_TRUE(b.take(1500));
  EXPECT_FALSE(b.take(1500));
  EXPECT_TRUE(b.take(10'000));  // refilled, capped at the burst
  EXPECT_TRUE(b.take(10'000));
  EXPECT_TRUE(b.take(10'000));
  EXPECT_FALSE(b.take(10'000));
  TokenBucket unlimited(0, 0);
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(unlimited.take(0));
}

ClientLimiter::Address ip(uint8_t a, uint8_t b = 0) {
  ClientLimiter::Address out{};
  out[10] = out[11] = 0xff;  // v4-mapped
  out[12] = 10;
  out[14] = b;
  out[15] = a;
  return out;
}

TEST(ClientLimiter, BucketPerAddress) {
  ClientLimiter l(2, 3, 1000);  // 2/s, burst 3
  ASSERT_TRUE(l.enabled());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(l.take(ip(1), 1000), 0);
  EXPECT_EQ(l.take(ip(1), 1000), 500);  // refused: a token in 500 ms
  EXPECT_EQ(l.take(ip(2), 1000), 0);    // another address has its own bucket
  EXPECT_EQ(l.take(ip(1), 1500), 0);
  EXPECT_GT(l.take(ip(1), 1500), 0);
  EXPECT_EQ(l.refused(), 2u);
  EXPECT_EQ(l.tracked(), 2u);
  ClientLimiter off(0, 0, 1000);
  EXPECT_FALSE(off.enabled());
  for (int i = 0; i < 100; ++i) EXPECT_EQ(off.take(ip(1), 0), 0);
  EXPECT_EQ(off.tracked(), 0u);
}

TEST(ClientLimiter, RefilledBucketsExpire) {
  ClientLimiter l(2, 4, 1000);  // refilled 2 s after the last request
  for (int i = 0; i < 4; ++i) EXPECT_EQ(l.take(ip(1), 1000), 0);
  EXPECT_EQ(l.take(ip(2), 2000), 0);
  l.expire(2999);  // neither is full yet
  EXPECT_EQ(l.tracked(), 2u);
  EXPECT_GT(l.take(ip(1), 1000), 0);  // and ip(1) is still empty
  l.expire(3000);                     // ip(1) is full again: nothing to remember
  EXPECT_EQ(l.tracked(), 1u);
  l.expire(4000);
  EXPECT_EQ(l.tracked(), 0u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(l.take(ip(1), 4000), 0);  // a fresh, full bucket
  EXPECT_GT(l.take(ip(1), 4000), 0);
}

TEST(ClientLimiter, TrackedAddressesAreCapped) {
  ClientLimiter l(1, 1, 16);  // at most one address per shard
  int admitted = 0;
  for (int i = 0; i < 2000; ++i) {
    if (l.take(ip(static_cast<uint8_t>(i), static_cast<uint8_t>(i >> 8)), 1000) == 0) ++admitted;
  }
  EXPECT_LE(l.tracked(), 16u);
  // Past the cap, new addresses share their shard's bucket: at most one token each.
  EXPECT_LE(admitted, 32);
  EXPECT_GE(l.refused(), 2000u - 32u);
  l.expire(10'000);
  EXPECT_EQ(l.tracked(), 0u);
}

TEST(UfopQueue, FifoBoundsAndRelease) {
  UfopQueue q("ufop-a");
  auto members = std::make_shared<Members>(Members{make("a")});
  Rng rng(5);
  q.set_members(members, 0, rng);
  InstancePtr held = q.try_claim(*members, 0, rng);
  ASSERT_TRUE(held);
  EXPECT_FALSE(q.try_claim(*members, 0, rng));
  std::vector<int> woken;
  auto waiter = [&](int id) {
    auto w = std::make_shared<Waiter>();
    w->wake = [&woken, id](const std::shared_ptr<Waiter>&) { woken.push_back(id); };
    return w;
  };
  auto w1 = waiter(1), w2 = waiter(2), w3 = waiter(3);
  EXPECT_EQ(q.enqueue(w1, 2, 0, rng), UfopQueue::Enqueued::kWaiting);
  EXPECT_EQ(q.enqueue(w2, 2, 0, rng), UfopQueue::Enqueued::kWaiting);
  EXPECT_EQ(q.enqueue(w3, 2, 0, rng), UfopQueue::Enqueued::kFull);
  EXPECT_EQ(q.queued(), 2);
  EXPECT_EQ(q.in_flight(), 1);
  // Nobody overtakes the queue.
  members->front()->release();
  EXPECT_FALSE(q.try_claim(*members, 0, rng));
  ASSERT_TRUE(members->front()->try_claim());
  // A release serves the head, in order.
  q.release(*held, 0, rng);
  EXPECT_EQ(woken, std::vector<int>{1});
  EXPECT_EQ(q.cancel(w1), held);     // granted: cancel hands the slot over
  EXPECT_EQ(q.cancel(w2), nullptr);  // timed out: removed
  EXPECT_EQ(q.queued(), 0);
  q.release(*held, 0, rng);
  EXPECT_EQ(q.in_flight(), 0);
  EXPECT_TRUE(q.try_claim(*members, 0, rng));
}

TEST(UfopQueue, NewMembersServeWaiters) {
  UfopQueue q("ufop-a");
  Rng rng(5);
  q.set_members(std::make_shared<Members>(), 0, rng);
  auto w = std::make_shared<Waiter>();
  int woken = 0;
  w->wake = [&](const std::shared_ptr<Waiter>&) { ++woken; };
  EXPECT_EQ(q.enqueue(w, 5, 0, rng), UfopQueue::Enqueued::kWaiting);
  q.set_members(std::make_shared<Members>(Members{make("a")}), 0, rng);
  EXPECT_EQ(woken, 1);
  EXPECT_TRUE(w->granted);
}

TEST(UfopQueue, CommandConcurrency) {
  UfopQueue q("ufop-a");
  EXPECT_TRUE(q.enter(2));
  EXPECT_TRUE(q.enter(2));
  EXPECT_FALSE(q.enter(2));
  q.leave();
  EXPECT_TRUE(q.enter(2));
  EXPECT_TRUE(q.enter(0));  // 0: no cap
}

keeper::KeyValue kv(std::string key, const json::Value& v) {
  return keeper::KeyValue{std::move(key), json::serialize(v), 1, 1, 1, 0};
}

std::vector<keeper::KeyValue> records() {
  api::InstanceRecord run{.id = "i1", .ufop = "ufop-priv", .version = 1};
  run.state = api::InstanceState::kRunning;
  run.address = "127.0.0.1:9101";
  api::InstanceRecord cooling = run;
  cooling.id = "i2";
  cooling.stop_requested = true;
  api::InstanceRecord starting = run;
  starting.id = "i3";
  starting.state = api::InstanceState::kStarting;
  api::InstanceRecord noaddr = run;
  noaddr.id = "i4";
  noaddr.address = "nowhere";
  api::UfopRecord priv{.name = "ufop-priv", .owner = "AKowner"};
  api::UfopRecord semi{.name = "ufop-semi", .owner = "AKowner", .mode = api::UfopMode::kSemiPublic};
  api::UfopRecord pub{.name = "ufop-pub", .owner = "AKowner", .mode = api::UfopMode::kPublic};
  return {
      kv("/instances/ufop-priv/i1", api::to_json(run)),
      kv("/instances/ufop-priv/i2", api::to_json(cooling)),
      kv("/instances/ufop-priv/i3", api::to_json(starting)),
      kv("/instances/ufop-priv/i4", api::to_json(noaddr)),
      kv("/instances/ufop-priv/bad", json::Value("not a record")),
      kv("/ufops/ufop-priv", api::to_json(priv)),
      kv("/ufops/ufop-semi", api::to_json(semi)),
      kv("/ufops/ufop-pub", api::to_json(pub)),
      kv("/users/AKowner", api::to_json(api::UserRecord{"o", "AKowner", "s1", "paid", false})),
      kv("/users/AKother", api::to_json(api::UserRecord{"x", "AKother", "s2", "free", false})),
      kv("/users/AKuser", api::to_json(api::UserRecord{"u", "AKuser", "s3", "free", false})),
      kv("/users/AKadmin", api::to_json(api::UserRecord{"a", "AKadmin", "s4", "free", true})),
      keeper::KeyValue{"/uses/AKuser/ufop-semi", "{}", 1, 1, 1, 0},
  };
}

TEST(Table, RoutesOnlyRunningNonStoppingInstances) {
  Table t({});
  t.reset(records(), 10, 0);
  auto snap = t.current();
  ASSERT_EQ(snap->ufops.size(), 3u);
  const Route& r = snap->ufops.find("ufop-priv")->second;
  ASSERT_EQ(r.members->size(), 1u);
  EXPECT_EQ(r.members->front()->id, "i1");
  EXPECT_EQ(r.members->front()->address, "127.0.0.1:9101");
  EXPECT_TRUE(snap->users.find("AKowner")->second.paid);
  EXPECT_TRUE(snap->uses.count("AKuser/ufop-semi"));
  // Instance state survives an unrelated update; a cooling update removes it.
  InstancePtr before = r.members->front();
  uint64_t gen = t.generation();
  api::InstanceRecord cool{.id = "i1", .ufop = "ufop-priv", .version = 1};
  cool.state = api::InstanceState::kRunning;
  cool.address = "127.0.0.1:9101";
  t.apply({keeper::Event{
              keeper::Event::Type::kPut,
              kv("/users/AKnew", api::to_json(api::UserRecord{"n", "AKnew", "s", "free", false}))}},
          11, 0);
  EXPECT_GT(t.generation(), gen);
  EXPECT_EQ(t.current()->ufops.find("ufop-priv")->second.members->front(), before);
  cool.stop_requested = true;
  t.apply(
      {keeper::Event{keeper::Event::Type::kPut, kv("/instances/ufop-priv/i1", api::to_json(cool))}},
      12, 0);
  EXPECT_TRUE(t.current()->ufops.find("ufop-priv")->second.members->empty());
  t.apply({keeper::Event{keeper::Event::Type::kDelete, keeper::KeyValue{"/ufops/ufop-pub"}}}, 13,
          0);
  EXPECT_FALSE(t.current()->ufops.count("ufop-pub"));
}

TEST(Access, ByModeAndCaller) {
  Table t({});
  t.reset(records(), 10, 0);
  auto snap = t.current();
  auto route = [&](const char* n) -> const Route& { return snap->ufops.find(n)->second; };
  auto user = [&](const char* ak) { return &snap->users.find(ak)->second; };
  EXPECT_EQ(check_access(*snap, route("ufop-pub"), nullptr), Access::kAllow);
  EXPECT_EQ(check_access(*snap, route("ufop-pub"), user("AKother")), Access::kAllow);
  EXPECT_EQ(check_access(*snap, route("ufop-semi"), nullptr), Access::kUnauthenticated);
  EXPECT_EQ(check_access(*snap, route("ufop-semi"), user("AKuser")), Access::kAllow);
  EXPECT_EQ(check_access(*snap, route("ufop-semi"), user("AKother")), Access::kForbidden);
  EXPECT_EQ(check_access(*snap, route("ufop-semi"), user("AKowner")), Access::kAllow);
  EXPECT_EQ(check_access(*snap, route("ufop-priv"), nullptr), Access::kUnauthenticated);
  EXPECT_EQ(check_access(*snap, route("ufop-priv"), user("AKuser")), Access::kForbidden);
  EXPECT_EQ(check_access(*snap, route("ufop-priv"), user("AKowner")), Access::kAllow);
  EXPECT_EQ(check_access(*snap, route("ufop-priv"), user("AKadmin")), Access::kAllow);
}

// The fast path's head scanner: what it takes, what it leaves to Beast.
TEST(HttpScan, ReadsACommonRequestHead) {
  std::string in =
      "POST /ufop/a?url=x HTTP/1.1\r\nHost: gate:1\r\nContent-Length: 4\r\n"
      "authorization:  Qiniu AK:sig \r\nConnection: Keep-Alive, close\r\n"
      "Content-Type: text/plain\r\n\r\nbodyNEXT";
  scan::Request r;
  ASSERT_EQ(scan::scan_request(in, r), scan::Status::kComplete);
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.target, "/ufop/a?url=x");
  EXPECT_EQ(r.head_bytes, in.size() - 8);
  EXPECT_TRUE(r.has_content_length);
  EXPECT_EQ(r.content_length, 4u);
  EXPECT_EQ(r.authorization, "Qiniu AK:sig");
  EXPECT_EQ(r.host, "gate:1");
  EXPECT_EQ(r.content_type, "text/plain");
  EXPECT_TRUE(r.close);
  EXPECT_TRUE(r.keep_alive);
  ASSERT_EQ(r.header_count, 5u);
  EXPECT_EQ(r.headers[2].name, "authorization");
  std::string line;
  scan::append_header(line, r.headers[2]);
  EXPECT_EQ(line, "authorization: Qiniu AK:sig\r\n");
  EXPECT_TRUE(scan::is_hop_by_hop("connection"));
  EXPECT_TRUE(scan::is_hop_by_hop("TE"));
  EXPECT_FALSE(scan::is_hop_by_hop("Content-Length"));
}

TEST(HttpScan, IncompleteHeadsWaitAndOddOnesGoToBeast) {
  scan::Request r;
  EXPECT_EQ(scan::scan_request("", r), scan::Status::kIncomplete);
  EXPECT_EQ(scan::scan_request("GET /u HTTP/1.1\r\nHost: x\r\n", r), scan::Status::kIncomplete);
  for (std::string odd : {
           "PUT /u HTTP/1.1\r\n\r\n",                                // method
           "GET /u HTTP/1.0\r\n\r\n",                                // version
           "GET http://x/u HTTP/1.1\r\n\r\n",                        // absolute form
           "GET /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",  // chunked
           "POST /u HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",       // 100-continue
           "GET /u HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
           "GET /u HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
           "GET /u HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",  // obs-fold
           "GET /u HTTP/1.1\r\nBad Name: a\r\n\r\n",
           "GET /u HTTP/1.1\r\nX: a\rb\r\n\r\n",  // bare CR
           "GET /u HTTP/1.1\n\n",                 // bare LFs
           "GET /u\x01 HTTP/1.1\r\n\r\n",
       }) {
    EXPECT_EQ(scan::scan_request(odd, r), scan::Status::kOther) << odd;
  }
}

TEST(HttpScan, ReadsResponsesWithALengthAndLeavesTheRest) {
  scan::Response r;
  std::string ok = "HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi";
  ASSERT_EQ(scan::scan_response(ok, r), scan::Status::kComplete);
  EXPECT_EQ(r.status, 201);
  EXPECT_EQ(r.reason, "Created");
  EXPECT_EQ(r.content_length, 2u);
  EXPECT_TRUE(r.close);
  EXPECT_EQ(r.head_bytes, ok.size() - 2);
  EXPECT_EQ(scan::scan_response("HTTP/1.1 200 OK\r\n", r), scan::Status::kIncomplete);
  for (std::string odd : {
           "HTTP/1.1 100 Continue\r\n\r\n",
           "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
           "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
           "HTTP/1.1 2x0 OK\r\n\r\n",
           "HTTP/1.1 200\r\n\r\n",
       }) {
    EXPECT_EQ(scan::scan_response(odd, r), scan::Status::kOther) << odd;
  }
}

}  // namespace
}  // namespace qufop::gate
