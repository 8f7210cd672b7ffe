#include "gate/table.h"

#include <spdlog/spdlog.h>

#include <condition_variable>

#include "keeper/client.h"

namespace qufop::gate {

std::string Table::range_end() { return keeper::prefix_end(api::kUsesPrefix); }

Result<HostPort> parse_instance_address(std::string_view address) {
  auto hp = parse_host_port(address, false);
  if (!hp) return hp.error();
  if (hp->host.empty()) return Error::invalid("address '" + std::string(address) + "': no host");
  return hp;
}

Table::Table(Options options) : options_(options), current_(std::make_shared<const Snapshot>()) {}

void Table::reset(const std::vector<keeper::KeyValue>& kvs, int64_t revision, int64_t now_ms) {
  std::lock_guard lock(mu_);
  kv_.clear();
  for (const auto& kv : kvs) kv_[kv.key] = kv.value;
  publish(revision, now_ms);
}

void Table::apply(const std::vector<keeper::Event>& events, int64_t revision, int64_t now_ms) {
  std::lock_guard lock(mu_);
  for (const auto& e : events) {
    if (e.type == keeper::Event::Type::kPut) {
      kv_[e.kv.key] = e.kv.value;
    } else {
      kv_.erase(e.kv.key);
    }
  }
  publish(revision, now_ms);
}

std::shared_ptr<const Snapshot> Table::current() const {
  std::lock_guard lock(mu_);
  return current_;
}

std::vector<std::shared_ptr<UfopQueue>> Table::queues() const {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<UfopQueue>> out;
  for (const auto& [name, q] : queues_) out.push_back(q);
  return out;
}

InstancePtr Table::instance_for(const std::string& key, const api::InstanceRecord& r,
                                int concurrency) {
  auto hp = parse_instance_address(r.address);
  if (!hp) {
    if (bad_.insert(key + "#address").second) {
      spdlog::warn("{}: bad address: {}", key, hp.error().message);
    }
    return nullptr;
  }
  auto it = instances_.find(key);
  if (it != instances_.end()) {
    const Instance& old = *it->second;
    // Same target and parameters: keep it, with its outstanding count and ejection.
    if (old.host == hp->host && old.port == hp->port && old.concurrency == concurrency &&
        old.running_since_ms == r.running_since_ms && old.warmup_ms == r.warmup_ms) {
      return it->second;
    }
  }
  auto inst = std::make_shared<Instance>(r.id, hp->host, hp->port, concurrency, r.running_since_ms,
                                         r.warmup_ms);
  instances_[key] = inst;
  return inst;
}

namespace {

template <typename T>
bool parse_or_warn(const std::string& key, const std::string& value,
                   Result<T> (*from)(const json::Value&), T& out,
                   std::unordered_set<std::string>& bad) {
  auto r = api::parse_record(value, from);
  if (!r) {
    if (bad.insert(key + "#" + value).second) {
      spdlog::warn("{}: ignored: {}", key, r.error().message);
    }
    return false;
  }
  out = std::move(*r);
  return true;
}

bool starts_with(const std::string& s, std::string_view prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

void Table::publish(int64_t revision, int64_t now_ms) {
  auto snap = std::make_shared<Snapshot>();
  snap->revision = revision;
  StringMap<std::shared_ptr<TokenBucket>> buckets;
  StringMap<std::shared_ptr<UfopQueue>> queues;
  StringMap<InstancePtr> instances;
  std::map<std::string, std::vector<api::InstanceRecord>> by_ufop;
  std::map<std::string, std::string> instance_keys;  // "<ufop>/<id>" -> key
  std::map<std::string, int> concurrency;

  for (const auto& [key, value] : kv_) {
    if (starts_with(key, api::kUsersPrefix)) {
      api::UserRecord u;
      if (!parse_or_warn(key, value, api::user_from_json, u, bad_)) continue;
      User user{u.access_key, u.secret_key, u.user_class == "paid", u.admin, nullptr};
      auto b = buckets_.find(u.access_key);
      user.bucket = b != buckets_.end()
                        ? b->second
                        : std::make_shared<TokenBucket>(options_.user_rate, options_.user_burst);
      buckets[u.access_key] = user.bucket;
      snap->users.emplace(u.access_key, std::move(user));
    } else if (starts_with(key, api::kUsesPrefix)) {
      snap->uses.insert(key.substr(api::kUsesPrefix.size()));
    } else if (starts_with(key, api::kUfopsPrefix)) {
      api::UfopRecord u;
      if (!parse_or_warn(key, value, api::ufop_from_json, u, bad_)) continue;
      std::string name = key.substr(api::kUfopsPrefix.size());
      Route route{name, u.owner, u.mode, nullptr, nullptr};
      auto q = queues_.find(name);
      route.queue = q != queues_.end() ? q->second : std::make_shared<UfopQueue>(name);
      queues[name] = route.queue;
      snap->ufops.emplace(name, std::move(route));
      concurrency[name] = u.concurrency;
    } else if (starts_with(key, api::kInstancesPrefix)) {
      api::InstanceRecord r;
      if (!parse_or_warn(key, value, api::instance_from_json, r, bad_)) continue;
      if (r.state != api::InstanceState::kRunning || r.stop_requested) continue;
      instance_keys[r.ufop + "/" + r.id] = key;
      by_ufop[r.ufop].push_back(std::move(r));
    }
  }

  for (auto& [name, route] : snap->ufops) {
    auto members = std::make_shared<Members>();
    for (const auto& r : by_ufop[name]) {
      const std::string& key = instance_keys[r.ufop + "/" + r.id];
      if (auto inst = instance_for(key, r, concurrency[name])) {
        instances[key] = inst;
        members->push_back(std::move(inst));
      }
    }
    route.members = members;
    route.queue->set_members(members, now_ms, rng_);
  }
  buckets_ = std::move(buckets);
  queues_ = std::move(queues);
  instances_ = std::move(instances);
  current_ = std::move(snap);
  generation_.fetch_add(1, std::memory_order_acq_rel);
}

// ---- watcher ----

struct Watcher::State {
  State(std::vector<HostPort> endpoints, std::shared_ptr<Table> t, std::function<int64_t()> now)
      : client(std::move(endpoints)), table(std::move(t)), now_ms(std::move(now)) {}

  void run();
  Result<int64_t> sync();
  Result<void> follow(int64_t& next);
  void pause(std::chrono::milliseconds d) {
    std::unique_lock lock(mu);
    cv.wait_for(lock, d, [this] { return stopping.load(); });
  }

  keeper::Client client;
  keeper::WatchCancel cancel;  // ends a watch in progress when stopping
  std::shared_ptr<Table> table;
  std::function<int64_t()> now_ms;
  std::atomic<bool> stopping{false};
  std::atomic<bool> synced{false};
  std::mutex mu;
  std::condition_variable cv;
};

Result<int64_t> Watcher::State::sync() {
  keeper::RangeRequest r{Table::range_start(), Table::range_end()};
  auto res = client.range(r);
  if (!res) return res.error().wrap("keeper range " + r.key);
  table->reset(res->kvs, res->header.revision, now_ms());
  synced = true;
  return res->header.revision;
}

// Streams changes from `next` on; `next` follows what was applied, so a failure resumes there.
Result<void> Watcher::State::follow(int64_t& next) {
  keeper::WatchCreateRequest w;
  w.key = Table::range_start();
  w.range_end = Table::range_end();
  w.start_revision = next;
  w.progress_notify = true;
  return client.watch(
      w,
      [&](const std::vector<keeper::Event>& events, int64_t revision) {
        table->apply(events, revision, now_ms());
        next = revision + 1;
        return !stopping.load();
      },
      std::chrono::seconds(30), &cancel);
}

void Watcher::State::run() {
  int64_t next = 0;  // 0: range first
  bool reported = false;
  while (!stopping) {
    if (next == 0) {
      auto rev = sync();
      if (!rev) {
        if (!reported) spdlog::warn("cannot read keeper yet: {}", rev.error().message);
        reported = true;
        pause(std::chrono::milliseconds(500));
        continue;
      }
      if (reported) spdlog::info("keeper reachable again, routing table loaded");
      reported = false;
      next = *rev + 1;
    }
    int64_t before = next;
    auto r = follow(next);
    if (next != before) reported = false;
    if (stopping) break;
    if (!r && keeper::is_etcd_error(r.error(), keeper::kErrCompacted)) {
      next = 0;
    } else if (!r) {
      if (!reported) spdlog::warn("keeper watch from revision {}: {}", next, r.error().message);
      reported = true;  // said once per outage; the table keeps serving what it had
      pause(std::chrono::milliseconds(500));
    }
  }
}

Watcher::Watcher(std::vector<HostPort> endpoints, std::shared_ptr<Table> table,
                 std::function<int64_t()> now_ms)
    : state_(std::make_shared<State>(std::move(endpoints), std::move(table), std::move(now_ms))) {}

Watcher::~Watcher() { stop(); }

void Watcher::start() {
  thread_ = std::thread([s = state_] { s->run(); });
}

bool Watcher::synced() const { return state_->synced.load(); }

void Watcher::stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(state_->mu);
    state_->stopping = true;
  }
  state_->cv.notify_all();
  // Out of a pause at once, and out of a keeper watch stream by cancelling it; a range in
  // progress (the first load or after a compaction) ends within the client's request timeout.
  state_->cancel.cancel();
  thread_.join();
}

}  // namespace qufop::gate
