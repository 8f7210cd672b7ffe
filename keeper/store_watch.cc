#include "keeper/store_watch.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>

namespace qufop::keeper {

struct WatchHub::State {
  int64_t id = 0;
  KeyRange range;
  bool prev_kv = false;
  WatchCallbacks callbacks;
  bool fresh = false;      // under the hub's mu_: history not replayed yet
  int64_t next_rev = 0;    // delivery thread only (set before registration)
  bool dead = false;       // delivery thread only: told it is compacted
  std::mutex callback_mu;  // held while a callback runs
  std::atomic<bool> cancelled{false};
};

class WatchHub::Handle : public Watch {
 public:
  Handle(std::shared_ptr<WatchHub> hub, int64_t id) : hub_(std::move(hub)), id_(id) {}
  ~Handle() override { hub_->remove(id_); }
  int64_t id() const override { return id_; }

 private:
  std::shared_ptr<WatchHub> hub_;  // keeps the hub alive even past the store
  int64_t id_;
};

WatchHub::WatchHub(HistoryReader reader, int64_t revision)
    : reader_(std::move(reader)), published_(revision) {}

WatchHub::~WatchHub() { stop(); }

void WatchHub::start() {
  thread_ = std::thread([this] { loop(); });
}

void WatchHub::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  reader_ = nullptr;  // it points into the store, which may be gone next
}

void WatchHub::publish(int64_t revision, std::vector<RevisionEvents> events) {
  {
    std::lock_guard lock(mu_);
    published_ = revision;
    if (watches_.empty()) return;  // nobody to tell; a later watch replays from SQLite
    for (auto& e : events) pending_.push_back(std::make_shared<const RevisionEvents>(std::move(e)));
  }
  cv_.notify_all();
}

std::unique_ptr<Watch> WatchHub::add(const WatchCreateRequest& r, WatchCallbacks callbacks) {
  auto w = std::make_shared<State>();
  w->range = KeyRange::of(r.key, r.range_end);
  w->prev_kv = r.prev_kv;
  w->callbacks = std::move(callbacks);
  {
    std::lock_guard lock(mu_);
    w->id = next_id_++;
    // Every revision up to published_ is committed; later ones will be published.
    w->next_rev = r.start_revision > 0 ? r.start_revision : published_ + 1;
    w->fresh = w->next_rev <= published_;
    if (w->fresh) fresh_.push_back(w);
    watches_[w->id] = w;
  }
  cv_.notify_all();
  return std::make_unique<Handle>(shared_from_this(), w->id);
}

// After this returns no callback of the watch runs: a callback in progress on the delivery
// thread is waited for (unless this is that callback, cancelling its own watch).
void WatchHub::remove(int64_t id) {
  std::shared_ptr<State> w;
  bool on_delivery_thread = false;
  {
    std::lock_guard lock(mu_);
    auto it = watches_.find(id);
    if (it == watches_.end()) return;
    w = it->second;
    watches_.erase(it);
    std::erase(fresh_, w);
    on_delivery_thread = std::this_thread::get_id() == thread_id_;
  }
  w->cancelled = true;
  if (!on_delivery_thread) {
    std::lock_guard wait_for_callback(w->callback_mu);
  }
}

void WatchHub::loop() {
  {
    std::lock_guard lock(mu_);
    thread_id_ = std::this_thread::get_id();
  }
  Pass pass;
  while (next_pass(pass)) {
    for (auto& w : pass.fresh) {
      bool done = replay(*w);
      std::lock_guard lock(mu_);
      if (done) {
        w->fresh = false;
        pass.live.push_back(w);
      } else if (watches_.count(w->id) != 0) {
        fresh_.push_back(w);  // SQLite failed; try again after a pause
        retry_ = true;
      }
    }
    fan_out(pass);
    pass = Pass{};
  }
}

// Takes the events published so far and the watches to replay, in that order (see the header).
bool WatchHub::next_pass(Pass& pass) {
  std::unique_lock lock(mu_);
  if (retry_) {
    cv_.wait_for(lock, std::chrono::milliseconds(100), [this] { return stopping_; });
    retry_ = false;
  }
  cv_.wait(lock, [this] { return stopping_ || !pending_.empty() || !fresh_.empty(); });
  if (stopping_) return false;
  pass.events = std::move(pending_);
  pending_.clear();
  pass.fresh = std::move(fresh_);
  fresh_.clear();
  for (const auto& [id, w] : watches_) {
    if (!w->fresh) pass.live.push_back(w);
  }
  return true;
}

// Delivers history from next_rev to the snapshot's head, chunk by chunk; false if SQLite
// failed (the watch stays where it got to and is retried).
bool WatchHub::replay(State& w) {
  while (!w.cancelled) {
    auto chunk = reader_(w.range, w.next_rev, w.prev_kv);
    if (!chunk.ok()) {
      spdlog::warn("keeper watch {}: replaying history: {}", w.id, chunk.error().message);
      return false;
    }
    if (chunk->compacted) {
      compacted(w, *chunk->compacted);
      return true;
    }
    for (const auto& revision : chunk->revisions) deliver(w, revision);
    w.next_rev = std::max(w.next_rev, chunk->last + 1);
    if (chunk->last >= chunk->head) return true;
  }
  return true;
}

void WatchHub::fan_out(const Pass& pass) {
  for (const auto& revision : pass.events) {
    for (const auto& w : pass.live) {
      if (w->dead || w->cancelled || revision->revision < w->next_rev) continue;
      deliver(*w, *revision);
    }
  }
}

void WatchHub::deliver(State& w, const RevisionEvents& revision) {
  w.next_rev = revision.revision + 1;
  std::vector<Event> matched;
  for (const auto& e : revision.events) {
    if (!w.range.contains(e.kv.key)) continue;
    matched.push_back(Event{e.type, e.kv, w.prev_kv ? e.prev_kv : std::nullopt});
  }
  if (matched.empty()) return;
  std::lock_guard lock(w.callback_mu);
  if (w.cancelled || !w.callbacks.on_events) return;
  w.callbacks.on_events(matched, revision.revision);
}

void WatchHub::compacted(State& w, int64_t compact_revision) {
  w.dead = true;
  std::lock_guard lock(w.callback_mu);
  if (w.cancelled || !w.callbacks.on_compacted) return;
  w.callbacks.on_compacted(compact_revision);
}

}  // namespace qufop::keeper
