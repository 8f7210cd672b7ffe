#include "keeper/store_writer.h"

#include <spdlog/spdlog.h>

#include <memory>

namespace qufop::keeper {

Result<KeyValue> WriteCtx::put(const std::string& key, std::string value, int64_t lease,
                               const std::optional<KeyValue>& prev) {
  KeyValue kv;
  kv.key = key;
  kv.value = std::move(value);
  kv.mod_revision = rev_ + 1;
  // An existing key keeps its creation and counts versions; a new (or re-created) one starts.
  kv.create_revision = prev ? prev->create_revision : kv.mod_revision;
  kv.version = prev ? prev->version + 1 : 1;
  kv.lease = lease;
  QF_TRY(store_put(db_, kv, sub_++, prev ? prev->mod_revision : 0));
  events_.push_back(Event{Event::Type::kPut, kv, prev});
  return kv;
}

Result<void> WriteCtx::erase(const KeyValue& prev) {
  int64_t rev = rev_ + 1;
  QF_TRY(store_delete(db_, prev.key, rev, sub_++, prev.mod_revision));
  Event e{Event::Type::kDelete, KeyValue{}, prev};
  e.kv.key = prev.key;
  e.kv.mod_revision = rev;
  events_.push_back(std::move(e));
  return ok();
}

bool WriteCtx::lease_exists(int64_t id) const {
  auto it = lease_changes_.find(id);
  if (it != lease_changes_.end()) return it->second.has_value();
  return lessor_.exists(id);
}

bool WriteCtx::lease_expired(int64_t id) const {
  return lease_changes_.count(id) == 0 && lessor_.expired(id);
}

Result<void> WriteCtx::grant_lease(int64_t id, int64_t ttl) {
  QF_TRY(insert_lease(db_, id, ttl));
  lease_changes_[id] = ttl;
  return ok();
}

Result<void> WriteCtx::revoke_lease(int64_t id) {
  QF_TRY(delete_lease(db_, id));
  lease_changes_[id] = std::nullopt;
  return ok();
}

int64_t WriteCtx::new_lease_id() const {
  while (true) {
    auto id = static_cast<int64_t>(rng_() >> 1);
    if (id != 0 && !lease_exists(id)) return id;
  }
}

std::vector<Event> WriteCtx::end_write() {
  if (!events_.empty()) ++rev_;
  sub_ = 0;
  return std::move(events_);
}

namespace {

// A blocked caller of execute_all(). (A mutex and condition variable rather than
// std::binary_semaphore, whose acquire spins on sched_yield: with dozens of callers waiting
// for one fsync that spinning eats the writer's CPU.)
class Waiter {
 public:
  // Notified under the lock: once the caller sees `done_` it returns and the Waiter is gone.
  void finish(std::optional<EtcdError> failure) {
    std::lock_guard lock(mu_);
    failure_ = std::move(failure);
    done_ = true;
    cv_.notify_one();
  }
  std::optional<EtcdError> wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return done_; });
    return std::move(failure_);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::optional<EtcdError> failure_;
};

}  // namespace

Writer::Writer(sql::Db db, Lessor& lessor, Meta meta, size_t max_batch, bool commit_on_idle_caller,
               OnCommit on_commit)
    : db_(std::move(db)),
      lessor_(lessor),
      max_batch_(max_batch > 0 ? max_batch : 1),
      commit_on_idle_caller_(commit_on_idle_caller),
      on_commit_(std::move(on_commit)),
      revision_(meta.revision),
      compact_revision_(meta.compact_revision),
      thread_([this] { loop(); }) {}

Writer::~Writer() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  thread_.join();
  // Commits leave meta's revision behind (read_meta takes history's); record it on the way out
  // so the file says its revision in meta as well.
  auto recorded = db_.run("BEGIN IMMEDIATE");
  if (recorded.ok()) recorded = write_revision(db_, revision_.load());
  if (recorded.ok()) recorded = db_.run("COMMIT");
  if (!recorded.ok()) {
    if (sqlite3_get_autocommit(db_.handle()) == 0) (void)db_.run("ROLLBACK");
    spdlog::warn("keeper store: recording revision {} at close: {}", revision_.load(),
                 recorded.error().message);
  }
}

// With commit_on_idle_caller, an idle writer lets the caller (the daemon's io thread) commit
// its write itself: a lone write then costs no hand-off to the writer thread and back (two
// cross-CPU wake-ups, a large share of a single client's put on a small VM). Writes that
// arrive meanwhile queue up as usual and the writer thread takes them once this commit is
// done. Only while writes come one at a time (the last batch held one): under load the io
// threads are better left parsing the next requests than waiting out an fsync, and the writer
// thread commits their writes in batches.
void Writer::submit(Apply apply, Done done) {
  {
    std::lock_guard lock(mu_);
    if (!commit_on_idle_caller_ || busy_ || !queue_.empty() || stopping_ || last_batch_ > 1) {
      queue_.push_back(Job{std::move(apply), std::move(done)});
      cv_.notify_one();
      return;
    }
    busy_ = true;
  }
  std::vector<Job> batch;
  batch.push_back(Job{std::move(apply), std::move(done)});
  commit(batch);
  // Notified under the lock: once busy_ is false, a stopping writer may be destroyed.
  std::lock_guard lock(mu_);
  last_batch_ = 1;
  busy_ = false;
  if (!queue_.empty() || stopping_) cv_.notify_one();
}

std::vector<std::optional<EtcdError>> Writer::execute_all(const std::vector<Apply>& applies) {
  std::vector<std::unique_ptr<Waiter>> waiters;
  for (const auto& apply : applies) {
    auto* waiter = waiters.emplace_back(std::make_unique<Waiter>()).get();
    submit(apply,
           [waiter](std::optional<EtcdError> failure) { waiter->finish(std::move(failure)); });
  }
  std::vector<std::optional<EtcdError>> out;
  for (auto& waiter : waiters) out.push_back(waiter->wait());
  return out;
}

void Writer::loop() {
  std::vector<Job> batch;
  while (take(batch)) {
    commit(batch);
    std::lock_guard lock(mu_);
    last_batch_ = batch.size();
    batch.clear();
    busy_ = false;
  }
}

// Waits for work and takes what is queued, up to max_batch: writes that arrive while a commit
// is being fsynced form the next batch, so batches grow with the load by themselves. Waits
// too while a caller commits its own write (submit), since one connection commits at a time.
bool Writer::take(std::vector<Job>& batch) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [this] { return !busy_ && (stopping_ || !queue_.empty()); });
  if (queue_.empty()) return false;  // stopping, and every queued write is done
  busy_ = true;
  while (!queue_.empty() && batch.size() < max_batch_) {
    batch.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  return true;
}

void Writer::commit(std::vector<Job>& batch) {
  WriteCtx ctx(db_, lessor_, rng_, Meta{revision_.load(), compact_revision_.load()});
  std::vector<RevisionEvents> events;
  auto done = run_batch(ctx, batch, events);
  if (!done.ok()) {
    recover(batch, done.error());
    return;
  }
  publish(ctx, std::move(events));
  for (Job& job : batch) job.done(std::nullopt);
}

Result<void> Writer::run_batch(WriteCtx& ctx, std::vector<Job>& batch,
                               std::vector<RevisionEvents>& events) {
  QF_TRY(db_.run("BEGIN IMMEDIATE"));
  for (Job& job : batch) {
    job.apply(ctx);
    if (ctx.failure_) return *ctx.failure_;
    auto changes = ctx.end_write();
    if (!changes.empty()) events.push_back({ctx.rev(), std::move(changes)});
  }
  // No write of meta's revision: the batch's history rows carry it (read_meta).
  return db_.run("COMMIT");
}

// Order matters: leases and revision first, then watchers, then the callers, so a caller that
// sees its write acknowledged also sees it in revision() and in any watch it starts after.
void Writer::publish(WriteCtx& ctx, std::vector<RevisionEvents> events) {
  for (const auto& [id, ttl] : ctx.lease_changes_) {
    if (ttl) {
      lessor_.add(id, *ttl);
    } else {
      lessor_.remove(id);
    }
  }
  compact_revision_.store(ctx.compact_rev());
  revision_.store(ctx.rev());
  if (on_commit_) on_commit_(ctx.rev(), std::move(events));
}

// The batch is rolled back; the revision stays what the database says it is. Every write of
// the batch fails, even those that were fine: none of them is durable.
void Writer::recover(std::vector<Job>& batch, const Error& error) {
  if (sqlite3_get_autocommit(db_.handle()) == 0) (void)db_.run("ROLLBACK");
  auto meta = read_meta(db_);
  if (meta.ok()) {
    if (meta->revision != revision_.load()) {
      spdlog::error("keeper store: revision {} in the database after a failed commit, {} in memory",
                    meta->revision, revision_.load());
    }
    revision_.store(meta->revision);
    compact_revision_.store(meta->compact_revision);
  }
  spdlog::error("keeper store: commit of {} writes failed: {}", batch.size(), error.message);
  for (Job& job : batch) {
    job.done(EtcdError{kGrpcUnavailable, "keeper store: write failed: " + error.message});
  }
}

}  // namespace qufop::keeper
