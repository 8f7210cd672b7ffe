// keeper's Store: ties the SQLite tables (store_kv), etcd's request semantics (store_ops), the
// group-commit writer (store_writer), leases (store_lessor) and watches (store_watch)
// together. Reads run on pooled WAL reader connections, writes on the one writer thread.
#include "keeper/store.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <vector>

#include "common/files.h"
#include "keeper/store_kv.h"
#include "keeper/store_lessor.h"
#include "keeper/store_ops.h"
#include "keeper/store_schema.h"
#include "keeper/store_sqlite.h"
#include "keeper/store_watch.h"
#include "keeper/store_writer.h"

namespace qufop::keeper {
namespace {

// Revisions a replaying watch reads from one snapshot; bounds its memory.
constexpr int64_t kReplayChunk = 1000;
// Idle reader connections kept open; more are opened under load and closed after.
constexpr size_t kIdleReaders = 16;

// One process per database: a second keeper on the same file would keep its own revision in
// memory and corrupt the history. flock(2) is released by the kernel if the process dies.
class FileLock {
 public:
  static Result<FileLock> acquire(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return Error::sys("open(" + path + ")", errno);
    FileLock lock(fd);
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return lock;
    if (errno == EWOULDBLOCK) {
      return Error{"unavailable", "keeper database lock " + path + " is held by another process",
                   EWOULDBLOCK};
    }
    return Error::sys("flock(" + path + ")", errno);
  }
  FileLock(FileLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  FileLock& operator=(FileLock&&) = delete;
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);
  }

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_;
};

// Reader connections, each used by one thread at a time; WAL readers see every commit that
// finished before their snapshot began, so they see every acknowledged write.
class ReadPool {
 public:
  explicit ReadPool(std::string path) : path_(std::move(path)) {}

  class Borrowed {
   public:
    Borrowed(ReadPool* pool, std::unique_ptr<sql::Db> db) : pool_(pool), db_(std::move(db)) {}
    Borrowed(Borrowed&&) noexcept = default;
    Borrowed& operator=(Borrowed&&) = delete;
    ~Borrowed() {
      if (db_) pool_->give_back(std::move(db_));
    }
    sql::Db& operator*() { return *db_; }

   private:
    ReadPool* pool_;
    std::unique_ptr<sql::Db> db_;
  };

  Result<Borrowed> borrow() {
    {
      std::lock_guard lock(mu_);
      if (!idle_.empty()) {
        auto db = std::move(idle_.back());
        idle_.pop_back();
        return Borrowed(this, std::move(db));
      }
    }
    auto db = open_reader_db(path_);
    if (!db.ok()) return db.error();
    return Borrowed(this, std::make_unique<sql::Db>(std::move(*db)));
  }

 private:
  void give_back(std::unique_ptr<sql::Db> db) {
    std::lock_guard lock(mu_);
    if (idle_.size() < kIdleReaders) idle_.push_back(std::move(db));
  }

  std::string path_;
  std::mutex mu_;
  std::vector<std::unique_ptr<sql::Db>> idle_;
};

EtcdError unavailable(const Error& e) { return {kGrpcUnavailable, "keeper store: " + e.message}; }

struct BackupFinish {
  void operator()(sqlite3_backup* b) const { sqlite3_backup_finish(b); }
};

// SQLite's online backup: one step copies every page under one read snapshot of `source`.
Result<void> copy_database(sql::Db& source, const std::string& dest_path) {
  auto dest = sql::Db::open(dest_path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  if (!dest.ok()) return dest.error();
  std::unique_ptr<sqlite3_backup, BackupFinish> backup(
      sqlite3_backup_init(dest->handle(), "main", source.handle(), "main"));
  if (!backup) return sql::failure(dest->handle(), 0, "backup to " + dest_path);
  int rc = sqlite3_backup_step(backup.get(), -1);
  int finished = sqlite3_backup_finish(backup.release());
  if (rc != SQLITE_DONE) return sql::failure(dest->handle(), rc, "backup to " + dest_path);
  if (finished != SQLITE_OK)
    return sql::failure(dest->handle(), finished, "backup to " + dest_path);
  return ok();
}

// The blocking form of an async store call: starts it and waits for its completion.
template <class T, class Start>
StoreResult<T> wait_for(Start start) {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<StoreResult<T>> out;
  start([&](StoreResult<T> r) {
    std::lock_guard lock(mu);  // notified under the lock: the waiter's stack may go right after
    out = std::move(r);
    cv.notify_one();
  });
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return out.has_value(); });
  return std::move(*out);
}

void remove_file(const std::string& path) {
  ::unlink(path.c_str());
  ::unlink((path + "-journal").c_str());
}

class StoreImpl final : public Store {
 public:
  StoreImpl(StoreOptions options, FileLock lock, sql::Db db, Meta meta,
            const std::vector<std::pair<int64_t, int64_t>>& leases);
  ~StoreImpl() override;

  int64_t revision() const override { return writer_->revision(); }
  int64_t compact_revision() const override {
    return std::max<int64_t>(writer_->compact_revision(), 0);
  }

  StoreResult<RangeResponse> range(const RangeRequest& r) override;
  StoreResult<PutResponse> put(const PutRequest& r) override;
  StoreResult<DeleteRangeResponse> delete_range(const DeleteRangeRequest& r) override;
  StoreResult<TxnResponse> txn(const TxnRequest& r) override;
  StoreResult<CompactionResponse> compact(const CompactionRequest& r) override;

  void put_async(PutRequest r, Done<PutResponse> done) override;
  void delete_range_async(DeleteRangeRequest r, Done<DeleteRangeResponse> done) override;
  void txn_async(TxnRequest r, Done<TxnResponse> done) override;
  void compact_async(CompactionRequest r, Done<CompactionResponse> done) override;
  void lease_grant_async(LeaseGrantRequest r, Done<LeaseGrantResponse> done) override;
  void lease_revoke_async(int64_t id, Done<ResponseHeader> done) override;
  void lease_keepalive_async(int64_t id, Done<LeaseKeepAliveResponse> done) override;

  StoreResult<LeaseGrantResponse> lease_grant(const LeaseGrantRequest& r) override;
  StoreResult<ResponseHeader> lease_revoke(int64_t id) override;
  StoreResult<LeaseKeepAliveResponse> lease_keepalive(int64_t id) override;
  StoreResult<LeaseTimeToLiveResponse> lease_time_to_live(int64_t id, bool keys) override;
  void expire_leases() override;

  StoreResult<std::unique_ptr<Watch>> watch(const WatchCreateRequest& r,
                                            WatchCallbacks callbacks) override;
  Result<void> backup(const std::string& path) override;

 private:
  template <class T>
  StoreResult<T> read(const std::function<Outcome<T>(const View&)>& op);
  // Queues op (Outcome<T>(WriteCtx&)) for the next group commit; done gets its result once
  // the batch committed, or the batch's failure.
  template <class T, class Op>
  void write_async(Op op, Done<T> done);
  Result<HistoryChunk> read_history_chunk(const KeyRange& range, int64_t from, bool prev_kv);

  StoreOptions options_;
  Limits limits_;
  FileLock lock_;
  Lessor lessor_;
  ReadPool readers_;
  std::shared_ptr<WatchHub> hub_;
  std::unique_ptr<Writer> writer_;
};

StoreImpl::StoreImpl(StoreOptions options, FileLock lock, sql::Db db, Meta meta,
                     const std::vector<std::pair<int64_t, int64_t>>& leases)
    : options_(std::move(options)),
      limits_{options_.max_value_bytes, options_.max_key_bytes, options_.max_txn_ops},
      lock_(std::move(lock)),
      lessor_(options_.clock),
      readers_(options_.path) {
  // Expiry times are not persisted: every lease restarts its full TTL at open, as etcd does
  // when a new leader takes over its leases (it cannot know how long the old one was down).
  for (const auto& [id, ttl] : leases) lessor_.add(id, ttl);
  hub_ = std::make_shared<WatchHub>(
      [this](const KeyRange& range, int64_t from, bool prev_kv) {
        return read_history_chunk(range, from, prev_kv);
      },
      meta.revision);
  hub_->start();
  writer_ = std::make_unique<Writer>(
      std::move(db), lessor_, meta, options_.max_batch, options_.commit_on_idle_caller,
      [hub = hub_.get()](int64_t revision, std::vector<RevisionEvents> events) {
        hub->publish(revision, std::move(events));
      });
}

// The writer finishes its queue first (it publishes to the hub), then the hub stops (it reads
// through the readers); watches still held elsewhere keep only the stopped hub alive.
StoreImpl::~StoreImpl() {
  writer_.reset();
  hub_->stop();
}

template <class T>
StoreResult<T> StoreImpl::read(const std::function<Outcome<T>(const View&)>& op) {
  auto db = readers_.borrow();
  if (!db.ok()) return unavailable(db.error());
  auto txn = sql::ReadTxn::begin(**db);
  if (!txn.ok()) return unavailable(txn.error());
  // The header revision comes from the same snapshot as the data.
  auto meta = read_meta(**db);
  if (!meta.ok()) return unavailable(meta.error());
  auto out = op(View{**db, meta->revision, meta->compact_revision});
  if (!out.ok()) return unavailable(out.error());
  return std::move(*out);
}

template <class T, class Op>
void StoreImpl::write_async(Op op, Done<T> done) {
  // Filled by op on the writer thread inside the batch, read by done after its COMMIT.
  auto out = std::make_shared<std::optional<StoreResult<T>>>();
  writer_->submit(
      [op = std::move(op), out](WriteCtx& ctx) {
        auto outcome = op(ctx);
        if (!outcome.ok()) return ctx.fail(outcome.error());
        *out = std::move(*outcome);
      },
      [out, done = std::move(done)](std::optional<EtcdError> failure) {
        done(failure ? StoreResult<T>(std::move(*failure)) : std::move(**out));
      });
}

Result<HistoryChunk> StoreImpl::read_history_chunk(const KeyRange& range, int64_t from,
                                                   bool prev_kv) {
  auto db = readers_.borrow();
  if (!db.ok()) return db.error();
  auto txn = sql::ReadTxn::begin(**db);
  if (!txn.ok()) return txn.error();
  auto meta = read_meta(**db);
  if (!meta.ok()) return meta.error();
  HistoryChunk chunk;
  chunk.head = meta->revision;
  if (from < meta->compact_revision) {
    chunk.compacted = meta->compact_revision;
    return chunk;
  }
  chunk.last = std::min(meta->revision, from + kReplayChunk - 1);
  auto revisions = read_history(**db, range, from, chunk.last, prev_kv, meta->compact_revision);
  if (!revisions.ok()) return revisions.error();
  chunk.revisions = std::move(*revisions);
  return chunk;
}

StoreResult<RangeResponse> StoreImpl::range(const RangeRequest& r) {
  if (auto e = check_range(r)) return *e;
  return read<RangeResponse>([&](const View& view) { return read_range(view, r); });
}

void StoreImpl::put_async(PutRequest r, Done<PutResponse> done) {
  if (auto e = check_put(r, limits_)) return done(*e);
  write_async<PutResponse>([r = std::move(r)](WriteCtx& ctx) { return apply_put(ctx, r); },
                           std::move(done));
}

void StoreImpl::delete_range_async(DeleteRangeRequest r, Done<DeleteRangeResponse> done) {
  if (auto e = check_delete(r)) return done(*e);
  write_async<DeleteRangeResponse>(
      [r = std::move(r)](WriteCtx& ctx) { return apply_delete(ctx, r); }, std::move(done));
}

void StoreImpl::txn_async(TxnRequest r, Done<TxnResponse> done) {
  if (auto e = check_txn(r, limits_)) return done(*e);
  // A txn that only reads needs no revision and no fsync.
  if (is_read_only(r)) {
    return done(read<TxnResponse>([&](const View& view) { return read_txn(view, r); }));
  }
  write_async<TxnResponse>([r = std::move(r)](WriteCtx& ctx) { return apply_txn(ctx, r); },
                           std::move(done));
}

void StoreImpl::compact_async(CompactionRequest r, Done<CompactionResponse> done) {
  write_async<CompactionResponse>([r](WriteCtx& ctx) { return apply_compact(ctx, r); },
                                  std::move(done));
}

void StoreImpl::lease_grant_async(LeaseGrantRequest r, Done<LeaseGrantResponse> done) {
  if (auto e = check_lease_grant(r)) return done(*e);
  write_async<LeaseGrantResponse>([r](WriteCtx& ctx) { return apply_lease_grant(ctx, r); },
                                  std::move(done));
}

void StoreImpl::lease_revoke_async(int64_t id, Done<ResponseHeader> done) {
  write_async<ResponseHeader>([id](WriteCtx& ctx) { return apply_lease_revoke(ctx, id, false); },
                              std::move(done));
}

void StoreImpl::lease_keepalive_async(int64_t id, Done<LeaseKeepAliveResponse> done) {
  int64_t ttl = 0;
  auto renewal = lessor_.renew(id, &ttl);
  if (renewal == Lessor::Renewal::kRenewed) {
    return done(LeaseKeepAliveResponse{{revision()}, id, ttl});
  }
  EtcdError not_found{kGrpcNotFound, kErrLeaseNotFound};
  if (renewal != Lessor::Renewal::kExpired) return done(not_found);
  // etcd answers a keep-alive of a lease that ran out only once its revoke is done.
  write_async<ResponseHeader>(
      [id](WriteCtx& ctx) { return apply_lease_revoke(ctx, id, true); },
      [not_found, done = std::move(done)](StoreResult<ResponseHeader>) { done(not_found); });
}

StoreResult<PutResponse> StoreImpl::put(const PutRequest& r) {
  return wait_for<PutResponse>([&](auto done) { put_async(r, std::move(done)); });
}

StoreResult<DeleteRangeResponse> StoreImpl::delete_range(const DeleteRangeRequest& r) {
  return wait_for<DeleteRangeResponse>([&](auto done) { delete_range_async(r, std::move(done)); });
}

StoreResult<TxnResponse> StoreImpl::txn(const TxnRequest& r) {
  return wait_for<TxnResponse>([&](auto done) { txn_async(r, std::move(done)); });
}

StoreResult<CompactionResponse> StoreImpl::compact(const CompactionRequest& r) {
  return wait_for<CompactionResponse>([&](auto done) { compact_async(r, std::move(done)); });
}

StoreResult<LeaseGrantResponse> StoreImpl::lease_grant(const LeaseGrantRequest& r) {
  return wait_for<LeaseGrantResponse>([&](auto done) { lease_grant_async(r, std::move(done)); });
}

StoreResult<ResponseHeader> StoreImpl::lease_revoke(int64_t id) {
  return wait_for<ResponseHeader>([&](auto done) { lease_revoke_async(id, std::move(done)); });
}

StoreResult<LeaseKeepAliveResponse> StoreImpl::lease_keepalive(int64_t id) {
  return wait_for<LeaseKeepAliveResponse>(
      [&](auto done) { lease_keepalive_async(id, std::move(done)); });
}

// An unknown lease is not an error here: etcd answers TTL -1.
StoreResult<LeaseTimeToLiveResponse> StoreImpl::lease_time_to_live(int64_t id, bool keys) {
  auto remaining = lessor_.remaining(id);
  return read<LeaseTimeToLiveResponse>([&](const View& view) -> Outcome<LeaseTimeToLiveResponse> {
    LeaseTimeToLiveResponse resp;
    resp.header.revision = view.rev;
    resp.id = id;
    if (!remaining) return StoreResult<LeaseTimeToLiveResponse>(std::move(resp));
    resp.ttl = remaining->seconds;
    resp.granted_ttl = remaining->granted_ttl;
    if (keys) {
      auto kvs = list_by_lease(view.db, id);
      if (!kvs.ok()) return kvs.error();
      for (auto& kv : *kvs) resp.keys.push_back(std::move(kv.key));
    }
    return StoreResult<LeaseTimeToLiveResponse>(std::move(resp));
  });
}

// Each expired lease is revoked as its own write (its own revision, as etcd's separate
// LeaseRevoke entries); queued together they still share commits.
void StoreImpl::expire_leases() {
  auto ids = lessor_.expired_ids();
  if (ids.empty()) return;
  std::vector<Writer::Apply> applies;
  for (int64_t id : ids) {
    applies.push_back([id](WriteCtx& ctx) {
      auto outcome = apply_lease_revoke(ctx, id, true);
      if (!outcome.ok()) ctx.fail(outcome.error());
    });
  }
  for (const auto& failure : writer_->execute_all(applies)) {
    if (failure) spdlog::warn("keeper store: revoking expired leases: {}", failure->message);
  }
}

StoreResult<std::unique_ptr<Watch>> StoreImpl::watch(const WatchCreateRequest& r,
                                                     WatchCallbacks callbacks) {
  return hub_->add(r, std::move(callbacks));
}

// Written to path.tmp and renamed, so `path` is either the old file or a complete copy.
Result<void> StoreImpl::backup(const std::string& path) {
  std::string tmp = path + ".tmp";
  remove_file(tmp);
  auto db = readers_.borrow();
  if (!db.ok()) return db.error().wrap("backup");
  auto copied = copy_database(**db, tmp);
  if (!copied.ok()) {
    remove_file(tmp);
    return Error::io("backup of " + options_.path + " to " + path + ": " + copied.error().message);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    remove_file(tmp);
    return Error::sys("rename(" + tmp + ", " + path + ")", err);
  }
  return fsync_parent_dir(path);  // the rename is durable once its directory is
}

Result<std::unique_ptr<Store>> open_store(StoreOptions options) {
  if (sqlite3_threadsafe() == 0) return Error::io("libsqlite3 is built without thread support");
  auto lock = FileLock::acquire(options.path + ".lock");
  if (!lock.ok()) return lock.error();
  auto db = open_writer_db(options.path, options.wal_preallocate_bytes);
  if (!db.ok()) return db.error();
  auto meta = read_meta(*db);
  if (!meta.ok()) return Error::io("reading " + options.path + ": " + meta.error().message);
  auto leases = load_leases(*db);
  if (!leases.ok()) return Error::io("reading " + options.path + ": " + leases.error().message);
  return std::unique_ptr<Store>(
      new StoreImpl(std::move(options), std::move(*lock), std::move(*db), *meta, *leases));
}

}  // namespace

Result<std::unique_ptr<Store>> Store::open(StoreOptions options) {
  return open_store(std::move(options));
}

}  // namespace qufop::keeper
