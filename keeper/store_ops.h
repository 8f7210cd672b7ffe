// etcd v3's request semantics over keeper's tables: the checks etcd's gRPC layer makes before a
// request is applied, then reads (at a snapshot), puts, deletes, txns, compaction and lease
// writes (inside the writer's transaction).
//
// Outcome<T> separates the two ways a request fails: the outer Result carries an SQLite
// failure (the request did not happen; a write's whole batch is rolled back), the inner
// StoreResult carries etcd's answer, success or an etcd error.
#pragma once

#include <cstdint>
#include <optional>

#include "common/result.h"
#include "keeper/store.h"
#include "keeper/store_sqlite.h"
#include "keeper/store_writer.h"
#include "keeper/types.h"

namespace qufop::keeper {

template <class T>
using Outcome = Result<StoreResult<T>>;

struct Limits {
  size_t max_value_bytes = 0;
  size_t max_key_bytes = 0;
  size_t max_txn_ops = 0;
};

// etcd's lease bounds: a shorter TTL is raised to the minimum (etcd's default minimum, from
// its 100 ms heartbeat and 1 s election timeout: ceil(1.5 s)); a longer one is refused.
inline constexpr int64_t kMinLeaseTtl = 2;
inline constexpr int64_t kMaxLeaseTtl = 9'000'000'000;

// Checks made before anything is read or written (etcd's v3rpc checks).
std::optional<EtcdError> check_range(const RangeRequest& r);
std::optional<EtcdError> check_put(const PutRequest& r, const Limits& limits);
std::optional<EtcdError> check_delete(const DeleteRangeRequest& r);
std::optional<EtcdError> check_txn(const TxnRequest& r, const Limits& limits);
std::optional<EtcdError> check_lease_grant(const LeaseGrantRequest& r);

// A txn with no put or delete in either branch runs on a reader, like a range.
bool is_read_only(const TxnRequest& r);

// A consistent view to read from: `rev` is the revision the kv table holds in it.
struct View {
  sql::Db& db;
  int64_t rev = 0;
  int64_t compact_rev = -1;
};

Outcome<RangeResponse> read_range(const View& view, const RangeRequest& r);
Outcome<TxnResponse> read_txn(const View& view, const TxnRequest& r);

Outcome<PutResponse> apply_put(WriteCtx& ctx, const PutRequest& r);
Outcome<DeleteRangeResponse> apply_delete(WriteCtx& ctx, const DeleteRangeRequest& r);
Outcome<TxnResponse> apply_txn(WriteCtx& ctx, const TxnRequest& r);
Outcome<CompactionResponse> apply_compact(WriteCtx& ctx, const CompactionRequest& r);
Outcome<LeaseGrantResponse> apply_lease_grant(WriteCtx& ctx, const LeaseGrantRequest& r);
// only_if_expired: the expiry timer's revoke, skipped when a keep-alive renewed the lease.
Outcome<ResponseHeader> apply_lease_revoke(WriteCtx& ctx, int64_t id, bool only_if_expired);

}  // namespace qufop::keeper
