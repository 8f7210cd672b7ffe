#include "keeper/store_ops.h"

#include <algorithm>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "keeper/store_kv.h"

namespace qufop::keeper {
namespace {

// etcd messages that types.h does not name (no client needs to match them).
constexpr const char* kErrKeyNotFound = "etcdserver: key not found";
constexpr const char* kErrValueProvided = "etcdserver: value is provided";
constexpr const char* kErrLeaseProvided = "etcdserver: lease is provided";
constexpr const char* kErrLeaseTtlTooLarge = "etcdserver: too large lease TTL";

template <class T>
Outcome<T> accept(T value) {
  return StoreResult<T>(std::move(value));
}

template <class T>
Outcome<T> reject(EtcdError error) {
  return StoreResult<T>(std::move(error));
}

EtcdError invalid(std::string message) { return {kGrpcInvalidArgument, std::move(message)}; }

template <class T>
const EtcdError* error_of(const StoreResult<T>& r) {
  return std::get_if<EtcdError>(&r);
}

// ---- checks before anything runs ----------------------------------------------------------

std::optional<EtcdError> check_op(const RequestOp& op, const Limits& limits) {
  if (auto* range = std::get_if<RangeRequest>(&op.request)) return check_range(*range);
  if (auto* put = std::get_if<PutRequest>(&op.request)) return check_put(*put, limits);
  return check_delete(std::get<DeleteRangeRequest>(op.request));
}

// Whether a delete of [key, range_end) covers `k`. etcd 3.4 compares a "\0" range end
// literally here, so a put under a delete-to-the-end slips through and then panics its
// server; keeper reads "\0" as "to the end" and answers kErrDuplicateKey instead.
bool delete_covers(const DeleteRangeRequest& d, const std::string& k) {
  return KeyRange::of(d.key, d.range_end).contains(k);
}

// etcd's checkIntervals: within one branch, no key may be put twice, nor put and deleted.
std::optional<EtcdError> check_intervals(const std::vector<RequestOp>& ops) {
  std::vector<const DeleteRangeRequest*> deletes;
  for (const auto& op : ops) {
    if (auto* d = std::get_if<DeleteRangeRequest>(&op.request)) deletes.push_back(d);
  }
  std::set<std::string> puts;
  for (const auto& op : ops) {
    auto* put = std::get_if<PutRequest>(&op.request);
    if (put == nullptr) continue;
    bool deleted = std::any_of(deletes.begin(), deletes.end(), [&](const DeleteRangeRequest* d) {
      return delete_covers(*d, put->key);
    });
    if (!puts.insert(put->key).second || deleted) return invalid(kErrDuplicateKey);
  }
  return std::nullopt;
}

// ---- reads ------------------------------------------------------------------------------------

std::optional<EtcdError> range_revision_error(const View& view, int64_t revision) {
  if (revision > view.rev) return EtcdError{kGrpcOutOfRange, kErrFutureRev};
  if (revision > 0 && revision < view.compact_rev) return EtcdError{kGrpcOutOfRange, kErrCompacted};
  return std::nullopt;
}

// The kv table holds view.rev; older revisions come from history.
Result<std::vector<KeyValue>> list_kvs(const View& view, const KeyRange& range, int64_t at,
                                       int64_t limit, bool keys_only) {
  if (at == view.rev) return list_current(view.db, range, limit, keys_only);
  return list_at(view.db, range, at, limit, keys_only);
}

Result<int64_t> count_kvs(const View& view, const KeyRange& range, int64_t at) {
  if (at == view.rev) return count_current(view.db, range);
  return count_at(view.db, range, at);
}

// Fetches one more than the limit to know whether there is more (as etcd), and counts the
// whole range only when the limit cut it.
Result<RangeResponse> fetch_range(const View& view, const RangeRequest& r, int64_t at) {
  RangeResponse resp;
  resp.header.revision = view.rev;
  auto range = KeyRange::of(r.key, r.range_end);
  if (r.count_only) {
    auto count = count_kvs(view, range, at);
    if (!count.ok()) return count.error();
    resp.count = *count;
    return resp;
  }
  int64_t fetch = r.limit > 0 ? r.limit + 1 : 0;
  auto kvs = list_kvs(view, range, at, fetch, r.keys_only);
  if (!kvs.ok()) return kvs.error();
  resp.kvs = std::move(*kvs);
  resp.count = static_cast<int64_t>(resp.kvs.size());
  if (fetch > 0 && resp.count == fetch) {
    auto count = count_kvs(view, range, at);
    if (!count.ok()) return count.error();
    resp.count = *count;
    resp.kvs.resize(static_cast<size_t>(r.limit));
    resp.more = true;
  }
  return resp;
}

// ---- compares ---------------------------------------------------------------------------------

int three_way(int64_t a, int64_t b) { return a < b ? -1 : (a > b ? 1 : 0); }

int compare_target(const Compare& c, const KeyValue& kv) {
  switch (c.target) {
    case Compare::Target::kVersion:
      return three_way(kv.version, c.number);
    case Compare::Target::kCreate:
      return three_way(kv.create_revision, c.number);
    case Compare::Target::kMod:
      return three_way(kv.mod_revision, c.number);
    case Compare::Target::kLease:
      return three_way(kv.lease, c.number);
    case Compare::Target::kValue: {
      int r = kv.value.compare(c.value);  // bytewise, as Go's bytes.Compare
      return r < 0 ? -1 : (r > 0 ? 1 : 0);
    }
  }
  std::abort();
}

bool compare_holds_for(const Compare& c, const KeyValue& kv) {
  int r = compare_target(c, kv);
  switch (c.result) {
    case Compare::Result::kEqual:
      return r == 0;
    case Compare::Result::kNotEqual:
      return r != 0;
    case Compare::Result::kGreater:
      return r > 0;
    case Compare::Result::kLess:
      return r < 0;
  }
  std::abort();
}

// etcd's applyCompare: every key of the range must satisfy it. No key at all compares as the
// zero KeyValue (version/create/mod/lease 0), except that a value compare then fails, since
// a missing value is not the empty value.
Result<bool> compare_holds(sql::Db& db, const Compare& c) {
  bool need_values = c.target == Compare::Target::kValue;
  auto kvs = list_current(db, KeyRange::of(c.key, c.range_end), 0, !need_values);
  if (!kvs.ok()) return kvs.error();
  if (kvs->empty()) return !need_values && compare_holds_for(c, KeyValue{});
  return std::all_of(kvs->begin(), kvs->end(),
                     [&](const KeyValue& kv) { return compare_holds_for(c, kv); });
}

Result<bool> compares_hold(sql::Db& db, const std::vector<Compare>& compares) {
  for (const auto& c : compares) {
    auto holds = compare_holds(db, c);
    if (!holds.ok() || !*holds) return holds;
  }
  return true;
}

// ---- writes -----------------------------------------------------------------------------------

// What etcd checks against the current state before a put: the lease, then the key that
// ignore_value / ignore_lease need.
std::optional<EtcdError> put_state_error(const WriteCtx& ctx, const PutRequest& r,
                                         const std::optional<KeyValue>& prev) {
  if (r.lease != 0 && !ctx.lease_exists(r.lease)) {
    return EtcdError{kGrpcNotFound, kErrLeaseNotFound};
  }
  if ((r.ignore_value || r.ignore_lease) && !prev) return invalid(kErrKeyNotFound);
  return std::nullopt;
}

// etcd checks the chosen branch before applying any of it, so a txn fails as a whole.
Result<std::optional<EtcdError>> txn_ops_error(WriteCtx& ctx, const std::vector<RequestOp>& ops) {
  View before{ctx.db(), ctx.rev(), ctx.compact_rev()};
  for (const auto& op : ops) {
    if (auto* range = std::get_if<RangeRequest>(&op.request)) {
      if (auto e = range_revision_error(before, range->revision)) return e;
    } else if (auto* put = std::get_if<PutRequest>(&op.request)) {
      auto prev = get_current(ctx.db(), put->key);
      if (!prev.ok()) return prev.error();
      if (auto e = put_state_error(ctx, *put, *prev)) return e;
    }
  }
  return std::optional<EtcdError>();
}

// After txn_ops_error passed and check_intervals ruled out a put under a delete, no op can
// fail on etcd grounds; one that does is a bug, and half a txn must never commit.
template <class T>
Result<ResponseOp> unwrap_op(Outcome<T> outcome) {
  if (!outcome.ok()) return outcome.error();
  if (error_of(*outcome) != nullptr) std::abort();
  return ResponseOp{std::get<T>(std::move(*outcome))};
}

Result<ResponseOp> apply_op(WriteCtx& ctx, const RequestOp& op) {
  if (auto* range = std::get_if<RangeRequest>(&op.request)) {
    // Later ranges of a txn see its earlier writes, at the txn's new revision (as etcd).
    return unwrap_op(read_range(View{ctx.db(), ctx.header_rev(), ctx.compact_rev()}, *range));
  }
  if (auto* put = std::get_if<PutRequest>(&op.request)) return unwrap_op(apply_put(ctx, *put));
  return unwrap_op(apply_delete(ctx, std::get<DeleteRangeRequest>(op.request)));
}

}  // namespace

std::optional<EtcdError> check_range(const RangeRequest& r) {
  if (r.key.empty()) return invalid(kErrEmptyKey);
  return std::nullopt;
}

std::optional<EtcdError> check_put(const PutRequest& r, const Limits& limits) {
  if (r.key.empty()) return invalid(kErrEmptyKey);
  if (r.ignore_value && !r.value.empty()) return invalid(kErrValueProvided);
  if (r.ignore_lease && r.lease != 0) return invalid(kErrLeaseProvided);
  if (r.key.size() > limits.max_key_bytes) {
    return invalid(
        "etcdserver: key is too large (" + std::to_string(r.key.size()) +
        " bytes; keeper's limit is max_key_bytes = " + std::to_string(limits.max_key_bytes) + ")");
  }
  if (r.value.size() > limits.max_value_bytes) return invalid(kErrValueTooLarge);
  return std::nullopt;
}

std::optional<EtcdError> check_delete(const DeleteRangeRequest& r) {
  if (r.key.empty()) return invalid(kErrEmptyKey);
  return std::nullopt;
}

// etcd's checkTxnRequest then checkIntervals on both branches, whichever will run.
std::optional<EtcdError> check_txn(const TxnRequest& r, const Limits& limits) {
  size_t ops = std::max({r.compare.size(), r.success.size(), r.failure.size()});
  if (ops > limits.max_txn_ops) return invalid(kErrTooManyOps);
  for (const auto& c : r.compare) {
    if (c.key.empty()) return invalid(kErrEmptyKey);
  }
  for (const auto* branch : {&r.success, &r.failure}) {
    for (const auto& op : *branch) {
      if (auto e = check_op(op, limits)) return e;
    }
  }
  if (auto e = check_intervals(r.success)) return e;
  return check_intervals(r.failure);
}

std::optional<EtcdError> check_lease_grant(const LeaseGrantRequest& r) {
  if (r.ttl > kMaxLeaseTtl) return EtcdError{kGrpcOutOfRange, kErrLeaseTtlTooLarge};
  return std::nullopt;
}

bool is_read_only(const TxnRequest& r) {
  auto reads = [](const RequestOp& op) { return std::holds_alternative<RangeRequest>(op.request); };
  return std::all_of(r.success.begin(), r.success.end(), reads) &&
         std::all_of(r.failure.begin(), r.failure.end(), reads);
}

Outcome<RangeResponse> read_range(const View& view, const RangeRequest& r) {
  if (auto e = range_revision_error(view, r.revision)) return reject<RangeResponse>(*e);
  auto resp = fetch_range(view, r, r.revision > 0 ? r.revision : view.rev);
  if (!resp.ok()) return resp.error();
  return accept(std::move(*resp));
}

Outcome<TxnResponse> read_txn(const View& view, const TxnRequest& r) {
  auto holds = compares_hold(view.db, r.compare);
  if (!holds.ok()) return holds.error();
  TxnResponse resp;
  resp.header.revision = view.rev;
  resp.succeeded = *holds;
  for (const auto& op : *holds ? r.success : r.failure) {
    auto range = read_range(view, std::get<RangeRequest>(op.request));
    if (!range.ok()) return range.error();
    if (auto* e = error_of(*range)) return reject<TxnResponse>(*e);
    resp.responses.push_back(ResponseOp{std::get<RangeResponse>(std::move(*range))});
  }
  return accept(std::move(resp));
}

Outcome<PutResponse> apply_put(WriteCtx& ctx, const PutRequest& r) {
  auto prev = get_current(ctx.db(), r.key);
  if (!prev.ok()) return prev.error();
  if (auto e = put_state_error(ctx, r, *prev)) return reject<PutResponse>(*e);
  std::string value = r.ignore_value ? (*prev)->value : r.value;
  int64_t lease = r.ignore_lease ? (*prev)->lease : r.lease;
  auto kv = ctx.put(r.key, std::move(value), lease, *prev);
  if (!kv.ok()) return kv.error();
  PutResponse resp;
  resp.header.revision = ctx.header_rev();
  if (r.prev_kv) resp.prev_kv = std::move(*prev);
  return accept(std::move(resp));
}

Outcome<DeleteRangeResponse> apply_delete(WriteCtx& ctx, const DeleteRangeRequest& r) {
  auto kvs = list_current(ctx.db(), KeyRange::of(r.key, r.range_end), 0, false);
  if (!kvs.ok()) return kvs.error();
  for (const auto& kv : *kvs) QF_TRY(ctx.erase(kv));
  DeleteRangeResponse resp;
  resp.header.revision = ctx.header_rev();
  resp.deleted = static_cast<int64_t>(kvs->size());
  if (r.prev_kv) resp.prev_kvs = std::move(*kvs);
  return accept(std::move(resp));
}

Outcome<TxnResponse> apply_txn(WriteCtx& ctx, const TxnRequest& r) {
  auto holds = compares_hold(ctx.db(), r.compare);
  if (!holds.ok()) return holds.error();
  const auto& ops = *holds ? r.success : r.failure;
  auto error = txn_ops_error(ctx, ops);
  if (!error.ok()) return error.error();
  if (*error) return reject<TxnResponse>(**error);
  TxnResponse resp;
  resp.succeeded = *holds;
  for (const auto& op : ops) {
    auto response = apply_op(ctx, op);
    if (!response.ok()) return response.error();
    resp.responses.push_back(std::move(*response));
  }
  resp.header.revision = ctx.header_rev();
  return accept(std::move(resp));
}

Outcome<CompactionResponse> apply_compact(WriteCtx& ctx, const CompactionRequest& r) {
  if (r.revision <= ctx.compact_rev()) {
    return reject<CompactionResponse>({kGrpcOutOfRange, kErrCompacted});
  }
  if (r.revision > ctx.rev()) return reject<CompactionResponse>({kGrpcOutOfRange, kErrFutureRev});
  QF_TRY(compact_history(ctx.db(), r.revision));
  QF_TRY(write_compact_revision(ctx.db(), r.revision));
  // Compaction may delete the newest history rows (tombstones), which read_meta takes the
  // revision from; meta keeps it.
  QF_TRY(write_revision(ctx.db(), ctx.rev()));
  ctx.set_compact_rev(r.revision);
  CompactionResponse resp;
  resp.header.revision = ctx.rev();
  return accept(std::move(resp));
}

Outcome<LeaseGrantResponse> apply_lease_grant(WriteCtx& ctx, const LeaseGrantRequest& r) {
  int64_t id = r.id != 0 ? r.id : ctx.new_lease_id();
  if (ctx.lease_exists(id)) {
    return reject<LeaseGrantResponse>({kGrpcFailedPrecondition, kErrLeaseExists});
  }
  int64_t ttl = std::max(r.ttl, kMinLeaseTtl);
  QF_TRY(ctx.grant_lease(id, ttl));
  LeaseGrantResponse resp;
  resp.header.revision = ctx.rev();
  resp.id = id;
  resp.ttl = ttl;
  return accept(std::move(resp));
}

// The lease's keys go in one revision, in key order (etcd sorts them too).
Outcome<ResponseHeader> apply_lease_revoke(WriteCtx& ctx, int64_t id, bool only_if_expired) {
  if (!ctx.lease_exists(id)) return reject<ResponseHeader>({kGrpcNotFound, kErrLeaseNotFound});
  if (only_if_expired && !ctx.lease_expired(id)) return accept(ResponseHeader{ctx.rev()});
  auto kvs = list_by_lease(ctx.db(), id);
  if (!kvs.ok()) return kvs.error();
  for (const auto& kv : *kvs) QF_TRY(ctx.erase(kv));
  QF_TRY(ctx.revoke_lease(id));
  return accept(ResponseHeader{ctx.header_rev()});
}

}  // namespace qufop::keeper
