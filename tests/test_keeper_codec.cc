// keeper's etcd v3 JSON gateway codec: round trips of every message, the exact JSON of answers
// observed from a real etcd 3.4.23, default omission, and parse errors that name their field.
#include <gtest/gtest.h>

#include <climits>

#include "keeper/codec.h"

namespace qufop::keeper {
namespace {

json::Value parse_json(std::string_view text) {
  auto v = json::parse(text);
  EXPECT_TRUE(v.ok()) << text;
  return v ? *v : json::Value();
}

std::string text(const json::Value& v) { return json::serialize(v); }

// encode -> parse -> encode gives the same JSON: nothing written is lost on the way back.
template <class T, class Parse>
void expect_round_trip(const T& x, Parse parse) {
  json::Value v = codec::encode(x);
  auto back = parse(v);
  ASSERT_TRUE(back.ok()) << back.error().message << " in " << text(v);
  EXPECT_EQ(text(codec::encode(*back)), text(v));
}

// The message of a parse that must fail.
template <class Parse>
std::string parse_failure(Parse parse, std::string_view json_text) {
  auto r = parse(parse_json(json_text));
  if (r.ok()) return "(parsed without error)";
  EXPECT_EQ(r.error().code, "invalid_argument");
  return r.error().message;
}

// A header as etcd writes it; codec keeps only the revision.
std::string etcd_header(int rev) {
  return R"("header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952",)"
         R"("revision":")" +
         std::to_string(rev) + R"(","raft_term":"2"})";
}

const std::string kBinary = std::string("\0\x01\xfe\xff/k", 6);

KeyValue full_kv() { return {kBinary, std::string("v\0v", 3), 2, 3, 4, 5}; }

// --- requests -------------------------------------------------------------------------------

TEST(KeeperCodec, RangeRequestRoundTripsAndOmitsDefaults) {
  RangeRequest r{kBinary, std::string(1, '\0'), 10, INT64_MAX, true, true};
  expect_round_trip(r, codec::parse_range);
  auto back = codec::parse_range(codec::encode(r));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->key, kBinary);
  EXPECT_EQ(back->range_end, std::string(1, '\0'));
  EXPECT_EQ(back->limit, 10);
  EXPECT_EQ(back->revision, INT64_MAX);
  EXPECT_TRUE(back->keys_only);
  EXPECT_TRUE(back->count_only);
  EXPECT_EQ(text(codec::encode(RangeRequest{"a", "", 0, 0, false, false})), R"({"key":"YQ=="})");
  EXPECT_EQ(text(codec::encode(RangeRequest{"a/", "a0", 1, 0, false, false})),
            R"({"key":"YS8=","range_end":"YTA=","limit":"1"})");
}

TEST(KeeperCodec, PutRequestRoundTrips) {
  expect_round_trip(PutRequest{kBinary, "value", 42, true, true, true}, codec::parse_put);
  EXPECT_EQ(text(codec::encode(PutRequest{"a/1", "v1", 0, false, false, false})),
            R"({"key":"YS8x","value":"djE="})");
  auto p = codec::parse_put(parse_json(R"({"key":"YS8x","value":"djI=","prev_kv":true})"));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->key, "a/1");
  EXPECT_EQ(p->value, "v2");
  EXPECT_TRUE(p->prev_kv);
  EXPECT_FALSE(p->ignore_value);
}

TEST(KeeperCodec, DeleteRangeRequestRoundTrips) {
  expect_round_trip(DeleteRangeRequest{"a/", "a0", true}, codec::parse_delete_range);
  EXPECT_EQ(text(codec::encode(DeleteRangeRequest{"a/", "a0", true})),
            R"({"key":"YS8=","range_end":"YTA=","prev_kv":true})");
}

TEST(KeeperCodec, TxnRequestRoundTripsEveryCompareAndOp) {
  TxnRequest t;
  using C = Compare;
  t.compare = {{C::Result::kEqual, C::Target::kVersion, "a", "", 0, ""},
               {C::Result::kGreater, C::Target::kCreate, "b", "c", 7, ""},
               {C::Result::kLess, C::Target::kMod, "c", "", -1, ""},
               {C::Result::kNotEqual, C::Target::kValue, "d", "", 0, kBinary},
               {C::Result::kEqual, C::Target::kLease, "e", "", 99, ""}};
  t.success = {{RangeRequest{"a", "b", 1, 2, true, false}},
               {PutRequest{"k", "v", 0, true, false, false}},
               {DeleteRangeRequest{"x", "y", true}}};
  t.failure = {{RangeRequest{"z", "", 0, 0, false, true}}};
  expect_round_trip(t, codec::parse_txn);
  auto back = codec::parse_txn(codec::encode(t));
  ASSERT_TRUE(back.ok());
  ASSERT_EQ(back->compare.size(), 5u);
  EXPECT_EQ(back->compare[1].result, C::Result::kGreater);
  EXPECT_EQ(back->compare[1].target, C::Target::kCreate);
  EXPECT_EQ(back->compare[1].number, 7);
  EXPECT_EQ(back->compare[1].range_end, "c");
  EXPECT_EQ(back->compare[3].value, kBinary);
  EXPECT_EQ(back->compare[4].number, 99);
  ASSERT_EQ(back->success.size(), 3u);
  EXPECT_TRUE(std::holds_alternative<PutRequest>(back->success[1].request));
  EXPECT_TRUE(std::holds_alternative<DeleteRangeRequest>(back->success[2].request));
  ASSERT_EQ(back->failure.size(), 1u);
  EXPECT_TRUE(std::get<RangeRequest>(back->failure[0].request).count_only);
}

TEST(KeeperCodec, CompareWritesItsUnionMemberEvenWhenZeroAndOmitsDefaultEnums) {
  TxnRequest t;
  t.compare = {{Compare::Result::kEqual, Compare::Target::kVersion, "x", "", 0, ""},
               {Compare::Result::kEqual, Compare::Target::kValue, "x", "", 0, ""}};
  EXPECT_EQ(
      text(codec::encode(t)),
      R"({"compare":[{"key":"eA==","version":"0"},{"target":"VALUE","key":"eA==","value":""}]})");
  t.compare = {{Compare::Result::kNotEqual, Compare::Target::kMod, "x", "", 5, ""}};
  t.success = {{PutRequest{"y", "yy", 0, false, false, false}}};
  EXPECT_EQ(text(codec::encode(t)),
            R"({"compare":[{"result":"NOT_EQUAL","target":"MOD","key":"eA==","mod_revision":"5"}],)"
            R"("success":[{"request_put":{"key":"eQ==","value":"eXk="}}]})");
}

TEST(KeeperCodec, TxnRequestAsCurlSendsItToEtcd) {
  auto t = codec::parse_txn(parse_json(
      R"({"compare":[{"key":"eA==","target":"VERSION","result":"EQUAL","version":"1"}],)"
      R"("success":[{"request_put":{"key":"eQ==","value":"eXk="}},{"request_range":{"key":"eA=="}},)"
      R"({"request_delete_range":{"key":"bm90aGluZw=="}}],"failure":[{"request_range":{"key":"eQ=="}}]})"));
  ASSERT_TRUE(t.ok()) << t.error().message;
  ASSERT_EQ(t->compare.size(), 1u);
  EXPECT_EQ(t->compare[0].number, 1);
  EXPECT_EQ(std::get<PutRequest>(t->success[0].request).value, "yy");
  EXPECT_EQ(std::get<DeleteRangeRequest>(t->success[2].request).key, "nothing");
}

TEST(KeeperCodec, EnumsAndIntegersAcceptNumbersAndNullsAreDefaults) {
  // etcd takes enums by number and int64 as JSON numbers too.
  auto t = codec::parse_txn(
      parse_json(R"({"compare":[{"key":"eA==","target":3,"result":1,"value":""}]})"));
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_EQ(t->compare[0].target, Compare::Target::kValue);
  EXPECT_EQ(t->compare[0].result, Compare::Result::kGreater);
  auto r = codec::parse_range(
      parse_json(R"({"key":"eA==","limit":5,"revision":"-3","range_end":null})"));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->limit, 5);
  EXPECT_EQ(r->revision, -3);
  EXPECT_EQ(r->range_end, "");
}

TEST(KeeperCodec, UnknownFieldsAreIgnored) {
  auto p = codec::parse_put(parse_json(R"({"key":"eA==","foo":1,"bar":{"x":[1]}})"));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->key, "x");
}

TEST(KeeperCodec, EmptyObjectsParseAsDefaults) {
  auto r = codec::parse_range(parse_json("{}"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->key, "");
  EXPECT_EQ(r->limit, 0);
  auto t = codec::parse_txn(parse_json("{}"));
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->compare.empty());
  EXPECT_EQ(text(codec::encode(TxnRequest{})), "{}");
  EXPECT_EQ(text(codec::encode(PutRequest{})), "{}");
}

TEST(KeeperCodec, CompactionAndLeaseRequestsRoundTrip) {
  expect_round_trip(CompactionRequest{17}, codec::parse_compaction);
  EXPECT_EQ(text(codec::encode(CompactionRequest{3})), R"({"revision":"3"})");
  expect_round_trip(LeaseGrantRequest{5, 777}, codec::parse_lease_grant);
  EXPECT_EQ(text(codec::encode(LeaseGrantRequest{5, 0})), R"({"TTL":"5"})");
  auto g = codec::parse_lease_grant(parse_json(R"({"TTL":5,"ID":"777"})"));
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->ttl, 5);
  EXPECT_EQ(g->id, 777);

  EXPECT_EQ(text(codec::encode_lease_id(777)), R"({"ID":"777"})");
  auto id = codec::parse_lease_id(codec::encode_lease_id(INT64_MAX));
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(*id, INT64_MAX);

  EXPECT_EQ(text(codec::encode_lease_time_to_live(777, true)), R"({"ID":"777","keys":true})");
  auto ttl = codec::parse_lease_time_to_live(codec::encode_lease_time_to_live(777, true));
  ASSERT_TRUE(ttl.ok());
  EXPECT_EQ(ttl->first, 777);
  EXPECT_TRUE(ttl->second);
}

TEST(KeeperCodec, WatchCreateRoundTrips) {
  WatchCreateRequest w{"l", "m", 7, true, true};
  json::Value v = codec::encode_watch_create(w);
  EXPECT_EQ(text(v), R"({"create_request":{"key":"bA==","range_end":"bQ==","start_revision":"7",)"
                     R"("progress_notify":true,"prev_kv":true}})");
  auto back = codec::parse_watch_create(v);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->key, "l");
  EXPECT_EQ(back->range_end, "m");
  EXPECT_EQ(back->start_revision, 7);
  EXPECT_TRUE(back->prev_kv);
  EXPECT_TRUE(back->progress_notify);
}

// --- responses: exact JSON as etcd 3.4.23 answered ---------------------------------------------

TEST(KeeperCodec, RangeResponseMatchesEtcd) {
  std::string kvs =
      R"("kvs":[{"key":"YS8x","create_revision":"2","mod_revision":"3","version":"2","value":"djI="},)"
      R"({"key":"YS8y","create_revision":"4","mod_revision":"4","version":"1"}])";
  auto r = codec::parse_range_response(
      parse_json("{" + etcd_header(4) + "," + kvs + R"(,"count":"2"})"));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->header.revision, 4);
  ASSERT_EQ(r->kvs.size(), 2u);
  EXPECT_EQ(r->kvs[0], (KeyValue{"a/1", "v2", 2, 3, 2, 0}));
  EXPECT_EQ(r->kvs[1], (KeyValue{"a/2", "", 4, 4, 1, 0}));
  EXPECT_FALSE(r->more);
  EXPECT_EQ(r->count, 2);
  EXPECT_EQ(text(codec::encode(*r)), R"({"header":{"revision":"4"},)" + kvs + R"(,"count":"2"})");

  // limit 1: more; an empty result is only the header.
  RangeResponse limited{{4}, {r->kvs[0]}, true, 2};
  EXPECT_EQ(text(codec::encode(limited)),
            R"({"header":{"revision":"4"},"kvs":[{"key":"YS8x","create_revision":"2",)"
            R"("mod_revision":"3","version":"2","value":"djI="}],"more":true,"count":"2"})");
  EXPECT_EQ(text(codec::encode(RangeResponse{{4}, {}, false, 0})),
            R"({"header":{"revision":"4"}})");
  expect_round_trip(RangeResponse{{9}, {full_kv(), full_kv()}, true, 7},
                    codec::parse_range_response);
}

TEST(KeeperCodec, PutResponseMatchesEtcd) {
  std::string prev =
      R"("prev_kv":{"key":"YS8x","create_revision":"2","mod_revision":"2","version":"1","value":"djE="})";
  auto p = codec::parse_put_response(parse_json("{" + etcd_header(3) + "," + prev + "}"));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->header.revision, 3);
  ASSERT_TRUE(p->prev_kv);
  EXPECT_EQ(*p->prev_kv, (KeyValue{"a/1", "v1", 2, 2, 1, 0}));
  EXPECT_EQ(text(codec::encode(*p)), R"({"header":{"revision":"3"},)" + prev + "}");
  EXPECT_EQ(text(codec::encode(PutResponse{{2}, {}})), R"({"header":{"revision":"2"}})");
  expect_round_trip(PutResponse{{2}, full_kv()}, codec::parse_put_response);
}

TEST(KeeperCodec, DeleteRangeResponseMatchesEtcd) {
  std::string rest =
      R"("deleted":"2","prev_kvs":[{"key":"YS8x","create_revision":"2","mod_revision":"3",)"
      R"("version":"2","value":"djI="},{"key":"YS8y","create_revision":"4","mod_revision":"4",)"
      R"("version":"1"}])";
  auto d = codec::parse_delete_range_response(parse_json("{" + etcd_header(6) + "," + rest + "}"));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->deleted, 2);
  ASSERT_EQ(d->prev_kvs.size(), 2u);
  EXPECT_EQ(d->prev_kvs[1].key, "a/2");
  EXPECT_EQ(text(codec::encode(*d)), R"({"header":{"revision":"6"},)" + rest + "}");
  // Nothing deleted: etcd answers with the header alone.
  EXPECT_EQ(text(codec::encode(DeleteRangeResponse{{6}, 0, {}})), R"({"header":{"revision":"6"}})");
}

TEST(KeeperCodec, TxnResponseMatchesEtcd) {
  std::string rest =
      R"("succeeded":true,"responses":[{"response_put":{"header":{"revision":"7"}}},)"
      R"({"response_range":{"header":{"revision":"7"},"kvs":[{"key":"eA==","create_revision":"5",)"
      R"("mod_revision":"5","version":"1"}],"count":"1"}},)"
      R"({"response_delete_range":{"header":{"revision":"7"}}}]})";
  auto t = codec::parse_txn_response(parse_json("{" + etcd_header(7) + "," + rest));
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_TRUE(t->succeeded);
  ASSERT_EQ(t->responses.size(), 3u);
  EXPECT_TRUE(std::holds_alternative<PutResponse>(t->responses[0].response));
  EXPECT_EQ(std::get<RangeResponse>(t->responses[1].response).kvs[0].key, "x");
  EXPECT_TRUE(std::holds_alternative<DeleteRangeResponse>(t->responses[2].response));
  EXPECT_EQ(text(codec::encode(*t)), R"({"header":{"revision":"7"},)" + rest);
  // A failed compare without failure ops: "succeeded" is omitted (false).
  auto f = codec::parse_txn_response(parse_json("{" + etcd_header(7) + "}"));
  ASSERT_TRUE(f.ok());
  EXPECT_FALSE(f->succeeded);
  EXPECT_TRUE(f->responses.empty());
}

TEST(KeeperCodec, CompactionResponseMatchesEtcd) {
  auto c = codec::parse_compaction_response(parse_json("{" + etcd_header(6) + "}"));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->header.revision, 6);
  EXPECT_EQ(text(codec::encode(*c)), R"({"header":{"revision":"6"}})");
  EXPECT_EQ(text(codec::encode_header({12})), R"({"revision":"12"})");
}

TEST(KeeperCodec, LeaseResponsesMatchEtcd) {
  auto g = codec::parse_lease_grant_response(
      parse_json("{" + etcd_header(7) + R"(,"ID":"777","TTL":"5"})"));
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->id, 777);
  EXPECT_EQ(g->ttl, 5);
  EXPECT_EQ(text(codec::encode(*g)), R"({"header":{"revision":"7"},"ID":"777","TTL":"5"})");

  auto k = codec::parse_lease_keepalive_response(
      parse_json(R"({"result":{)" + etcd_header(8) + R"(,"ID":"777","TTL":"5"}})" + "\n"));
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->id, 777);
  EXPECT_EQ(k->ttl, 5);
  EXPECT_EQ(text(codec::encode(*k)), R"({"header":{"revision":"8"},"ID":"777","TTL":"5"})");
  // An unknown lease: etcd answers 200 with no TTL, i.e. 0.
  auto gone = codec::parse_lease_keepalive_response(
      parse_json(R"({"result":{)" + etcd_header(8) + R"(,"ID":"778"}})"));
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(gone->ttl, 0);

  std::string ttl_rest = R"("ID":"777","TTL":"4","grantedTTL":"5","keys":["bDE="]})";
  auto t =
      codec::parse_lease_time_to_live_response(parse_json("{" + etcd_header(8) + "," + ttl_rest));
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->ttl, 4);
  EXPECT_EQ(t->granted_ttl, 5);
  EXPECT_EQ(t->keys, std::vector<std::string>{"l1"});
  EXPECT_EQ(text(codec::encode(*t)), R"({"header":{"revision":"8"},)" + ttl_rest);
  auto missing = codec::parse_lease_time_to_live_response(
      parse_json("{" + etcd_header(8) + R"(,"ID":"778","TTL":"-1"})"));
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->ttl, -1);
  EXPECT_EQ(missing->granted_ttl, 0);
  EXPECT_EQ(text(codec::encode(*missing)), R"({"header":{"revision":"8"},"ID":"778","TTL":"-1"})");
  // TTL absent means 0 seconds left, not the struct's "missing" default.
  auto zero =
      codec::parse_lease_time_to_live_response(parse_json(R"({"ID":"1","grantedTTL":"5"})"));
  ASSERT_TRUE(zero.ok());
  EXPECT_EQ(zero->ttl, 0);
}

TEST(KeeperCodec, WatchMessagesMatchEtcd) {
  auto created = codec::parse_watch_message(
      parse_json(R"({"result":{)" + etcd_header(9) + R"(,"created":true}})"));
  ASSERT_TRUE(created.ok());
  EXPECT_TRUE(created->created);
  EXPECT_EQ(created->header.revision, 9);
  EXPECT_EQ(created->watch_id, 0);

  std::string events =
      R"("events":[{"kv":{"key":"bDE=","create_revision":"8","mod_revision":"8","version":"1",)"
      R"("lease":"777"}},{"type":"DELETE","kv":{"key":"bDE=","mod_revision":"9"},)"
      R"("prev_kv":{"key":"bDE=","create_revision":"8","mod_revision":"8","version":"1","lease":"777"}}]})";
  auto m = codec::parse_watch_message(
      parse_json(R"({"result":{)" + etcd_header(9) + "," + events + "}"));
  ASSERT_TRUE(m.ok()) << m.error().message;
  ASSERT_EQ(m->events.size(), 2u);
  KeyValue put{"l1", "", 8, 8, 1, 777};
  EXPECT_EQ(m->events[0], (Event{Event::Type::kPut, put, std::nullopt}));
  EXPECT_EQ(m->events[1], (Event{Event::Type::kDelete, {"l1", "", 0, 9, 0, 0}, put}));
  EXPECT_EQ(text(codec::encode(*m)), R"({"result":{"header":{"revision":"9"},)" + events + "}");

  // A watch on a compacted revision: canceled, compact_revision set, header without revision.
  auto compacted = codec::parse_watch_message(parse_json(
      R"({"result":{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952",)"
      R"("raft_term":"2"},"canceled":true,"compact_revision":"3"}})"));
  ASSERT_TRUE(compacted.ok());
  EXPECT_TRUE(compacted->canceled);
  EXPECT_EQ(compacted->compact_revision, 3);
  EXPECT_EQ(text(codec::encode(*compacted)),
            R"({"result":{"header":{},"canceled":true,"compact_revision":"3"}})");

  // A progress notification: a header and nothing else.
  codec::WatchMessage progress;
  progress.header.revision = 5;
  EXPECT_EQ(text(codec::encode(progress)), R"({"result":{"header":{"revision":"5"}}})");

  codec::WatchMessage all;
  all.header.revision = 3;
  all.watch_id = 2;
  all.created = true;
  all.canceled = true;
  all.compact_revision = 1;
  all.cancel_reason = "why";
  all.events = {{Event::Type::kDelete, full_kv(), full_kv()}, {Event::Type::kPut, full_kv(), {}}};
  auto back = codec::parse_watch_message(codec::encode(all));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(text(codec::encode(*back)), text(codec::encode(all)));
  EXPECT_EQ(back->cancel_reason, "why");
  EXPECT_EQ(back->events, all.events);
}

TEST(KeeperCodec, EtcdErrorBodies) {
  std::string body =
      R"({"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3})";
  EXPECT_EQ(text(codec::encode(EtcdError{3, kErrEmptyKey})), body);
  auto e = codec::parse_error(parse_json(body));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->grpc_code, 3);
  EXPECT_EQ(e->message, kErrEmptyKey);
  // An error in the middle of one of the gateway's streams.
  auto s = codec::parse_error(parse_json(
      R"({"error":{"grpc_code":11,"http_code":400,"message":"etcdserver: mvcc: required revision has been compacted","http_status":"Bad Request"}})"));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->grpc_code, 11);
  EXPECT_EQ(s->message, kErrCompacted);
  // qufop's own error bodies and successes are not etcd errors.
  EXPECT_FALSE(codec::parse_error(parse_json(R"({"error":"not_found","message":"no route"})")));
  EXPECT_FALSE(codec::parse_error(parse_json("{" + etcd_header(1) + "}")));
  EXPECT_FALSE(codec::parse_error(parse_json("[]")));
}

// --- base64 ------------------------------------------------------------------------------------

TEST(KeeperCodec, Base64OfEveryByteAndLength) {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  for (size_t len : {0, 1, 2, 3, 4, 5, 255, 256}) {
    PutRequest p{"k", all.substr(0, len), 0, false, false, false};
    auto back = codec::parse_put(codec::encode(p));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(back->value, p.value) << len;
  }
  EXPECT_EQ(text(codec::encode(PutRequest{"k", "ab", 0, false, false, false})),
            R"({"key":"aw==","value":"YWI="})");
}

TEST(KeeperCodec, Base64AcceptsUrlSafeAndUnpadded) {
  auto p = codec::parse_put(parse_json(R"({"key":"YQ","value":"-_8="})"));
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(p->key, "a");
  EXPECT_EQ(p->value, "\xfb\xff");
}

// --- parse errors name their field -------------------------------------------------------------

TEST(KeeperCodec, ParseErrorsNameTheField) {
  EXPECT_EQ(parse_failure(codec::parse_put, R"({"key":"!!!"})"), "field 'key': not valid base64");
  EXPECT_EQ(parse_failure(codec::parse_put, R"({"key":"Y"})"), "field 'key': not valid base64");
  EXPECT_EQ(parse_failure(codec::parse_put, R"({"key":"YQ="})"), "field 'key': not valid base64");
  EXPECT_EQ(parse_failure(codec::parse_put, R"({"value":5})"), "field 'value': not valid base64");
  EXPECT_EQ(parse_failure(codec::parse_put, R"({"lease":"abc"})"),
            "field 'lease': expected an integer (a decimal string or a number)");
  EXPECT_EQ(parse_failure(codec::parse_put, R"({"prev_kv":"yes"})"),
            "field 'prev_kv': expected true or false");
  EXPECT_EQ(parse_failure(codec::parse_range, R"({"limit":"9223372036854775808"})"),
            "field 'limit': expected an integer (a decimal string or a number)");
  EXPECT_EQ(parse_failure(codec::parse_range, R"({"limit":1.5})"),
            "field 'limit': expected an integer (a decimal string or a number)");
  EXPECT_EQ(parse_failure(codec::parse_range, R"({"count_only":1})"),
            "field 'count_only': expected true or false");
  EXPECT_EQ(parse_failure(codec::parse_range, "[1]"), "body: expected a JSON object");
  EXPECT_EQ(parse_failure(codec::parse_range, "null"), "body: expected a JSON object");
  EXPECT_EQ(parse_failure(codec::parse_delete_range, R"({"range_end":"%"})"),
            "field 'range_end': not valid base64");
  EXPECT_EQ(parse_failure(codec::parse_compaction, R"({"revision":true})"),
            "field 'revision': expected an integer (a decimal string or a number)");
  EXPECT_EQ(parse_failure(codec::parse_lease_grant, R"({"TTL":"x"})"),
            "field 'TTL': expected an integer (a decimal string or a number)");
  EXPECT_EQ(parse_failure(codec::parse_lease_grant, R"({"ID":[]})"),
            "field 'ID': expected an integer (a decimal string or a number)");
  EXPECT_EQ(parse_failure(codec::parse_lease_id, R"({"ID":"1e"})"),
            "field 'ID': expected an integer (a decimal string or a number)");
  EXPECT_EQ(parse_failure(codec::parse_lease_time_to_live, R"({"ID":"1","keys":"no"})"),
            "field 'keys': expected true or false");
}

TEST(KeeperCodec, TxnParseErrorsNameTheNestedField) {
  EXPECT_EQ(parse_failure(codec::parse_txn, R"({"compare":[{},{"target":"FOO"}]})"),
            "field 'compare[1].target': unknown value 'FOO'");
  EXPECT_EQ(parse_failure(codec::parse_txn, R"({"compare":[{"result":"BIGGER"}]})"),
            "field 'compare[0].result': unknown value 'BIGGER'");
  EXPECT_EQ(parse_failure(codec::parse_txn, R"({"compare":[{"result":7}]})"),
            "field 'compare[0].result': unknown value '7'");
  EXPECT_EQ(parse_failure(codec::parse_txn, R"({"compare":[{"target":"VALUE","value":"*"}]})"),
            "field 'compare[0].value': not valid base64");
  EXPECT_EQ(parse_failure(codec::parse_txn, R"({"compare":[{"target":"MOD","mod_revision":"x"}]})"),
            "field 'compare[0].mod_revision': expected an integer (a decimal string or a number)");
  EXPECT_EQ(parse_failure(codec::parse_txn, R"({"compare":{}})"),
            "field 'compare': expected an array");
  EXPECT_EQ(parse_failure(codec::parse_txn, R"({"compare":[1]})"),
            "field 'compare[0]': expected a JSON object");
  EXPECT_EQ(parse_failure(codec::parse_txn, R"({"success":[{"request_put":{"key":"?"}}]})"),
            "field 'success[0].request_put.key': not valid base64");
  EXPECT_EQ(
      parse_failure(codec::parse_txn,
                    R"({"failure":[{"request_range":{}},{"request_range":{"limit":"x"}}]})"),
      "field 'failure[1].request_range.limit': expected an integer (a decimal string or a number)");
  EXPECT_EQ(
      parse_failure(codec::parse_txn, R"({"success":[{"request_delete_range":{"prev_kv":0}}]})"),
      "field 'success[0].request_delete_range.prev_kv': expected true or false");
  EXPECT_EQ(parse_failure(codec::parse_txn, R"({"success":[{}]})"),
            "field 'success[0]': expected one of request_range, request_put, request_delete_range");
  EXPECT_EQ(
      parse_failure(codec::parse_txn, R"({"success":[{"request_put":{},"request_range":{}}]})"),
      "field 'success[0]': more than one of request_range and request_put");
  EXPECT_EQ(parse_failure(codec::parse_txn, R"({"success":[{"request_txn":{}}]})"),
            "field 'success[0].request_txn': nested transactions are not supported");
  EXPECT_EQ(parse_failure(codec::parse_txn, R"({"success":[{"request_put":5}]})"),
            "field 'success[0].request_put': expected a JSON object");
}

TEST(KeeperCodec, WatchCreateParseErrors) {
  EXPECT_EQ(parse_failure(codec::parse_watch_create, "{}"),
            "field 'create_request': missing (only a create request starts a watch over HTTP)");
  EXPECT_EQ(parse_failure(codec::parse_watch_create, R"({"create_request":{"key":"!!"}})"),
            "field 'create_request.key': not valid base64");
  EXPECT_EQ(
      parse_failure(codec::parse_watch_create, R"({"create_request":{"start_revision":"x"}})"),
      "field 'create_request.start_revision': expected an integer (a decimal string or a number)");
  EXPECT_EQ(parse_failure(codec::parse_watch_create, R"({"create_request":[]})"),
            "field 'create_request': expected a JSON object");
}

TEST(KeeperCodec, ResponseParseErrorsNameTheField) {
  EXPECT_EQ(parse_failure(codec::parse_range_response, R"({"kvs":[{},{"value":"!"}]})"),
            "field 'kvs[1].value': not valid base64");
  EXPECT_EQ(parse_failure(codec::parse_range_response, R"({"header":{"revision":"x"}})"),
            "field 'header.revision': expected an integer (a decimal string or a number)");
  EXPECT_EQ(parse_failure(codec::parse_range_response, R"({"more":"true"})"),
            "field 'more': expected true or false");
  EXPECT_EQ(parse_failure(codec::parse_put_response, R"({"prev_kv":{"version":"v"}})"),
            "field 'prev_kv.version': expected an integer (a decimal string or a number)");
  EXPECT_EQ(parse_failure(codec::parse_delete_range_response, R"({"deleted":"many"})"),
            "field 'deleted': expected an integer (a decimal string or a number)");
  EXPECT_EQ(parse_failure(codec::parse_delete_range_response, R"({"prev_kvs":[{"key":"!"}]})"),
            "field 'prev_kvs[0].key': not valid base64");
  EXPECT_EQ(parse_failure(codec::parse_txn_response,
                          R"({"responses":[{"response_put":{"prev_kv":{"key":"!"}}}]})"),
            "field 'responses[0].response_put.prev_kv.key': not valid base64");
  EXPECT_EQ(
      parse_failure(codec::parse_txn_response, R"({"responses":[{}]})"),
      "field 'responses[0]': expected one of response_range, response_put, response_delete_range");
  EXPECT_EQ(parse_failure(codec::parse_compaction_response, R"({"header":3})"),
            "field 'header': expected a JSON object");
  EXPECT_EQ(parse_failure(codec::parse_lease_grant_response, R"({"TTL":"x"})"),
            "field 'TTL': expected an integer (a decimal string or a number)");
  EXPECT_EQ(parse_failure(codec::parse_lease_grant_response, R"({"ID":"1","error":"no space"})"),
            "field 'error': no space");
  EXPECT_EQ(parse_failure(codec::parse_lease_keepalive_response, R"({"result":{"TTL":"x"}})"),
            "field 'result.TTL': expected an integer (a decimal string or a number)");
  EXPECT_EQ(parse_failure(codec::parse_lease_time_to_live_response, R"({"keys":["bDE=","!"]})"),
            "field 'keys[1]': not valid base64");
  EXPECT_EQ(parse_failure(codec::parse_lease_time_to_live_response, R"({"grantedTTL":{}})"),
            "field 'grantedTTL': expected an integer (a decimal string or a number)");
  EXPECT_EQ(parse_failure(codec::parse_watch_message, R"({"header":{}})"),
            "field 'result': missing");
  EXPECT_EQ(
      parse_failure(codec::parse_watch_message, R"({"result":{"events":[{"type":"UPDATE"}]}})"),
      "field 'result.events[0].type': unknown value 'UPDATE'");
  EXPECT_EQ(parse_failure(codec::parse_watch_message,
                          R"({"result":{"events":[{"kv":{"mod_revision":"?"}}]}})"),
            "field 'result.events[0].kv.mod_revision': expected an integer (a decimal string or a "
            "number)");
  EXPECT_EQ(parse_failure(codec::parse_watch_message, R"({"result":{"canceled":"yes"}})"),
            "field 'result.canceled': expected true or false");
  EXPECT_EQ(parse_failure(codec::parse_watch_message, R"({"result":{"cancel_reason":1}})"),
            "field 'result.cancel_reason': expected a string");
}

TEST(KeeperCodec, FirstErrorWins) {
  EXPECT_EQ(parse_failure(codec::parse_put, R"({"key":"!","value":"!","lease":"x"})"),
            "field 'key': not valid base64");
}

}  // namespace
}  // namespace qufop::keeper
