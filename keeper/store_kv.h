// keeper's MVCC tables in SQL: the latest state (kv), every version and tombstone (history),
// the leases and the store's meta values. Plain functions over one connection; the caller
// owns the transaction. Every failure is an SQLite failure (Result error "unavailable").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "keeper/store_sqlite.h"
#include "keeper/types.h"

namespace qufop::keeper {

// etcd's key range: one key (range_end empty), [key, range_end), or every key >= key
// (range_end "\0").
struct KeyRange {
  enum class Kind { kOne, kSpan, kFrom };
  Kind kind = Kind::kOne;
  std::string key;
  std::string end;

  static KeyRange of(std::string_view key, std::string_view range_end);
  bool contains(std::string_view k) const;
};

// The events of one revision, in the order the revision made them.
struct RevisionEvents {
  int64_t revision = 0;
  std::vector<Event> events;
};

struct Meta {
  int64_t revision = 1;
  int64_t compact_revision = -1;  // -1: never compacted
};
Result<Meta> read_meta(sql::Db& db);
Result<void> write_revision(sql::Db& db, int64_t revision);
Result<void> write_compact_revision(sql::Db& db, int64_t revision);

// Latest state.
Result<std::optional<KeyValue>> get_current(sql::Db& db, std::string_view key);
// Sorted by key; limit 0 = all; keys_only leaves values empty.
Result<std::vector<KeyValue>> list_current(sql::Db& db, const KeyRange& range, int64_t limit,
                                           bool keys_only);
Result<int64_t> count_current(sql::Db& db, const KeyRange& range);
// The keys attached to a lease, sorted.
Result<std::vector<KeyValue>> list_by_lease(sql::Db& db, int64_t lease);

// As of a past revision (from history).
Result<std::vector<KeyValue>> list_at(sql::Db& db, const KeyRange& range, int64_t revision,
                                      int64_t limit, bool keys_only);
Result<int64_t> count_at(sql::Db& db, const KeyRange& range, int64_t revision);

// Writes: `kv` carries its new revision; `sub` orders changes within a revision; `prev_rev` is
// the mod_revision of the version replaced (0 when the key did not exist).
Result<void> store_put(sql::Db& db, const KeyValue& kv, int64_t sub, int64_t prev_rev);
Result<void> store_delete(sql::Db& db, std::string_view key, int64_t revision, int64_t sub,
                          int64_t prev_rev);
// Drops the history nobody can read any more once reads below `revision` are refused.
Result<void> compact_history(sql::Db& db, int64_t revision);

// The events of revisions [from, to] in `range`. With prev_kv, each event that is not a
// creation carries the key as of the revision before (when that is not compacted away).
Result<std::vector<RevisionEvents>> read_history(sql::Db& db, const KeyRange& range, int64_t from,
                                                 int64_t to, bool prev_kv,
                                                 int64_t compact_revision);

// Leases: (id, ttl seconds).
Result<std::vector<std::pair<int64_t, int64_t>>> load_leases(sql::Db& db);
Result<void> insert_lease(sql::Db& db, int64_t id, int64_t ttl);
Result<void> delete_lease(sql::Db& db, int64_t id);

}  // namespace qufop::keeper
