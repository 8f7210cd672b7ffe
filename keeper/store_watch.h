// keeper's watches: one delivery thread replays history for new watches (from SQLite, in
// chunks) and fans the writer's committed events out to live ones.
//
// Gap-free registration: the writer publishes a batch's events after COMMIT and before its
// callers return. Each pass of the delivery thread first takes the published events, then
// replays new watches from a read snapshot taken after that, which therefore holds every event
// taken (and maybe later ones). A watch remembers the next revision it needs and ignores any
// published revision below it, so nothing is lost between replay and live delivery and
// nothing is delivered twice.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/result.h"
#include "keeper/store.h"
#include "keeper/store_kv.h"

namespace qufop::keeper {

// One read of history for a replaying watch, from one snapshot.
struct HistoryChunk {
  std::optional<int64_t> compacted;  // set when `from` is below this compact revision
  std::vector<RevisionEvents> revisions;
  int64_t last = 0;  // the last revision this chunk covers
  int64_t head = 0;  // the store's revision in the snapshot
};
using HistoryReader =
    std::function<Result<HistoryChunk>(const KeyRange& range, int64_t from, bool prev_kv)>;

class WatchHub : public std::enable_shared_from_this<WatchHub> {
 public:
  // `revision`: the store's revision when it opened.
  WatchHub(HistoryReader reader, int64_t revision);
  ~WatchHub();
  WatchHub(const WatchHub&) = delete;
  WatchHub& operator=(const WatchHub&) = delete;

  void start();
  // Stops the delivery thread; no callback runs after it returns.
  void stop();

  // From the writer, after COMMIT and before the writes return.
  void publish(int64_t revision, std::vector<RevisionEvents> events);

  std::unique_ptr<Watch> add(const WatchCreateRequest& r, WatchCallbacks callbacks);

 private:
  struct State;
  class Handle;
  struct Pass {
    std::vector<std::shared_ptr<const RevisionEvents>> events;
    std::vector<std::shared_ptr<State>> fresh;
    std::vector<std::shared_ptr<State>> live;
  };

  void remove(int64_t id);
  void loop();
  bool next_pass(Pass& pass);
  bool replay(State& w);
  void fan_out(const Pass& pass);
  void deliver(State& w, const RevisionEvents& revision);
  void compacted(State& w, int64_t compact_revision);

  HistoryReader reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t published_;  // the last revision published (under mu_)
  std::vector<std::shared_ptr<const RevisionEvents>> pending_;
  std::map<int64_t, std::shared_ptr<State>> watches_;
  std::vector<std::shared_ptr<State>> fresh_;  // registered, history not replayed yet
  bool retry_ = false;                         // a replay failed; try again after a pause
  int64_t next_id_ = 1;
  bool stopping_ = false;
  std::thread thread_;
  std::thread::id thread_id_;
};

}  // namespace qufop::keeper
