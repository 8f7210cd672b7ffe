// keeper's store: etcd v3 semantics (revisions, MVCC history, txns, leases, watch, compaction)
// on SQLite in WAL mode with synchronous=FULL. Writes from many threads are grouped into one
// SQLite transaction and one fsync (group commit); a write is acknowledged (returns, or runs its
// completion) only after its commit is durable. Thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "common/result.h"
#include "keeper/types.h"

namespace qufop::keeper {

struct StoreOptions {
  std::string path;                   // the SQLite file; created if missing
  size_t max_value_bytes = 1u << 20;  // 1 MiB, as etcd
  size_t max_key_bytes = 1536;        // keys longer than this are refused (names the limit)
  size_t max_txn_ops = 128;           // as etcd
  size_t max_batch = 1024;            // writes grouped into one commit at most
  // The WAL file is extended with zeros to this size at open (0: left to grow), so commits
  // overwrite blocks it has instead of appending: an append's fdatasync also writes the inode.
  // The daemon uses the WAL's size at an autocheckpoint (10,000 pages) plus room for a batch.
  int64_t wal_preallocate_bytes = 0;
  // A write submitted while the writer is idle and the last batch held one write is committed
  // on the calling thread (the async call then returns after its commit, its `done` having run
  // there): a lone write skips two thread hand-offs. Under load writes still queue for the
  // writer thread. For callers that may block for one commit (the daemon's io threads).
  bool commit_on_idle_caller = false;
  // The clock used for lease expiry; injected so tests control time.
  std::function<std::chrono::steady_clock::time_point()> clock = std::chrono::steady_clock::now;
};

// A failed store operation: either an etcd-level error (returned to clients as etcd would) or an
// I/O error (disk full, failed fsync) in which case nothing was acknowledged.
using StoreError = EtcdError;
template <class T>
using StoreResult = std::variant<T, StoreError>;

// One registered watch. Events arrive on the callback in revision order, each revision once,
// from the store's delivery thread; the callback must not block for long. A watch that started
// at a compacted revision gets on_compacted(compact_revision) instead and is dead.
struct WatchCallbacks {
  std::function<void(const std::vector<Event>& events, int64_t revision)> on_events;
  std::function<void(int64_t compact_revision)> on_compacted;
};

class Watch {
 public:
  virtual ~Watch() = default;  // destroying it cancels the watch
  virtual int64_t id() const = 0;
};

class Store {
 public:
  // Opens (creating and migrating as needed) and runs PRAGMA integrity_check; a corrupt file is
  // refused with a message that says how to restore from a backup.
  static Result<std::unique_ptr<Store>> open(StoreOptions options);
  virtual ~Store() = default;

  virtual int64_t revision() const = 0;
  virtual int64_t compact_revision() const = 0;

  virtual StoreResult<RangeResponse> range(const RangeRequest& r) = 0;
  virtual StoreResult<PutResponse> put(const PutRequest& r) = 0;
  virtual StoreResult<DeleteRangeResponse> delete_range(const DeleteRangeRequest& r) = 0;
  virtual StoreResult<TxnResponse> txn(const TxnRequest& r) = 0;
  virtual StoreResult<CompactionResponse> compact(const CompactionRequest& r) = 0;

  // The same writes without a blocked thread: queued for the next group commit, `done` runs
  // exactly once, on the writer thread right after the batch's COMMIT (or its failure, which
  // fails every write of the batch) - or on the calling thread when no commit is needed (a
  // request refused by its checks, a read-only txn, a keep-alive that renewed its lease), or
  // after its commit there with StoreOptions::commit_on_idle_caller.
  // `done` must be quick and must not call a blocking write (it would wait for itself).
  template <class T>
  using Done = std::function<void(StoreResult<T>)>;
  virtual void put_async(PutRequest r, Done<PutResponse> done) = 0;
  virtual void delete_range_async(DeleteRangeRequest r, Done<DeleteRangeResponse> done) = 0;
  virtual void txn_async(TxnRequest r, Done<TxnResponse> done) = 0;
  virtual void compact_async(CompactionRequest r, Done<CompactionResponse> done) = 0;
  virtual void lease_grant_async(LeaseGrantRequest r, Done<LeaseGrantResponse> done) = 0;
  virtual void lease_revoke_async(int64_t id, Done<ResponseHeader> done) = 0;
  virtual void lease_keepalive_async(int64_t id, Done<LeaseKeepAliveResponse> done) = 0;

  virtual StoreResult<LeaseGrantResponse> lease_grant(const LeaseGrantRequest& r) = 0;
  virtual StoreResult<ResponseHeader> lease_revoke(int64_t id) = 0;
  virtual StoreResult<LeaseKeepAliveResponse> lease_keepalive(int64_t id) = 0;
  virtual StoreResult<LeaseTimeToLiveResponse> lease_time_to_live(int64_t id, bool keys) = 0;
  // Revokes every lease whose TTL ran out by the clock; called by a timer (about every 500 ms).
  virtual void expire_leases() = 0;

  virtual StoreResult<std::unique_ptr<Watch>> watch(const WatchCreateRequest& r,
                                                    WatchCallbacks callbacks) = 0;

  // An online, consistent copy of the database (SQLite backup API) into `path`.
  virtual Result<void> backup(const std::string& path) = 0;
};

}  // namespace qufop::keeper
