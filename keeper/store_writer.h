// keeper's single writer thread and its group commit: writes from concurrent callers queue up;
// the writer takes up to max_batch of them and applies them in one SQLite transaction (one
// fsync), each write at its own revision in queue order, then publishes and releases them.
// An idle writer may let a lone write's caller commit it itself (commit_on_idle_caller).
// A write is completed (its callback run, or its blocked caller woken) only after its COMMIT
// succeeded; when a batch fails, every write of it fails with Unavailable and nothing of it is
// visible.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"
#include "keeper/store_kv.h"
#include "keeper/store_lessor.h"
#include "keeper/store_sqlite.h"
#include "keeper/types.h"

namespace qufop::keeper {

// What one write sees inside the writer's transaction: the state as of every earlier write of
// the batch. Its changes all land at revision rev() + 1.
class WriteCtx {
 public:
  WriteCtx(sql::Db& db, const Lessor& lessor, std::mt19937_64& rng, Meta meta)
      : db_(db),
        lessor_(lessor),
        rng_(rng),
        rev_(meta.revision),
        compact_rev_(meta.compact_revision) {}

  sql::Db& db() { return db_; }
  int64_t rev() const { return rev_; }  // before this write
  // etcd's header revision: rev() + 1 once this write changed a key, else rev().
  int64_t header_rev() const { return events_.empty() ? rev_ : rev_ + 1; }
  int64_t compact_rev() const { return compact_rev_; }
  void set_compact_rev(int64_t revision) { compact_rev_ = revision; }

  // Key changes at revision rev() + 1; each records its watch event.
  Result<KeyValue> put(const std::string& key, std::string value, int64_t lease,
                       const std::optional<KeyValue>& prev);
  Result<void> erase(const KeyValue& prev);

  // Leases as this batch sees them: committed ones plus the batch's own grants and revokes.
  bool lease_exists(int64_t id) const;
  bool lease_expired(int64_t id) const;  // by the clock; a lease granted in this batch is not
  Result<void> grant_lease(int64_t id, int64_t ttl);
  Result<void> revoke_lease(int64_t id);
  // A random positive id no lease has (etcd's server-chosen ids are positive too).
  int64_t new_lease_id() const;

  // An SQLite failure inside a write: the whole batch fails.
  void fail(Error error) { failure_ = std::move(error); }

 private:
  friend class Writer;
  std::vector<Event> end_write();  // advances the revision when the write changed something

  sql::Db& db_;
  const Lessor& lessor_;
  std::mt19937_64& rng_;
  int64_t rev_;
  int64_t compact_rev_;
  int64_t sub_ = 0;
  std::vector<Event> events_;
  std::map<int64_t, std::optional<int64_t>> lease_changes_;  // id -> ttl, nullopt = revoked
  std::optional<Error> failure_;
};

class Writer {
 public:
  // Runs on the committing thread after each successful COMMIT, before any of its writes
  // returns: the new revision and the events of the batch, one entry per revision.
  using OnCommit = std::function<void(int64_t revision, std::vector<RevisionEvents> events)>;
  using Apply = std::function<void(WriteCtx&)>;
  // Runs once the write's batch committed (nullopt) or failed: on the writer thread, or on
  // the caller's when it committed its write itself (submit).
  using Done = std::function<void(std::optional<EtcdError> failure)>;

  // commit_on_idle_caller: see submit().
  Writer(sql::Db db, Lessor& lessor, Meta meta, size_t max_batch, bool commit_on_idle_caller,
         OnCommit on_commit);
  ~Writer();  // finishes the queued writes, then stops
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Queues `apply` for the next group commit and returns at once (but see below); `done` gets
  // the batch's failure (Unavailable) if its COMMIT failed, and then whatever `apply` produced
  // must be discarded. `done` runs on the writer thread, except with commit_on_idle_caller when
  // no commit is running, nothing is queued and the last batch held one write: then the calling
  // thread commits the write itself and `done` runs on it before submit returns. `done` must
  // not wait for another write.
  void submit(Apply apply, Done done);
  // The blocking form for several writes queued together (consecutive revisions, maybe one
  // commit): returns each one's failure once all are done.
  std::vector<std::optional<EtcdError>> execute_all(const std::vector<Apply>& applies);

  int64_t revision() const { return revision_.load(); }
  int64_t compact_revision() const { return compact_revision_.load(); }

 private:
  // A queued write: what it does and whom to tell. No thread waits on it; a blocking caller
  // waits on its own Waiter, which `done` signals.
  struct Job {
    Apply apply;
    Done done;
  };

  void loop();
  bool take(std::vector<Job>& batch);
  void commit(std::vector<Job>& batch);
  Result<void> run_batch(WriteCtx& ctx, std::vector<Job>& batch,
                         std::vector<RevisionEvents>& events);
  void publish(WriteCtx& ctx, std::vector<RevisionEvents> events);
  void recover(std::vector<Job>& batch, const Error& error);

  sql::Db db_;
  Lessor& lessor_;
  size_t max_batch_;
  bool commit_on_idle_caller_;
  OnCommit on_commit_;
  std::atomic<int64_t> revision_;
  std::atomic<int64_t> compact_revision_;
  std::mt19937_64 rng_{std::random_device{}()};  // lease ids; writer thread only

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool busy_ = false;      // a batch is being committed (by the writer thread or by submit)
  size_t last_batch_ = 0;  // writes in the last batch committed
  bool stopping_ = false;
  std::thread thread_;  // last: starts after everything above exists
};

}  // namespace qufop::keeper
