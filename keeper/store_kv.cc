#include "keeper/store_kv.h"

namespace qufop::keeper {
namespace {

// The WHERE clause of a key range: ?1 is the key, ?2 the range end (kSpan only). Statements
// number their other parameters from ?3 so the range binds the same way everywhere.
// `column` names the key column (a qualified name in joins).
std::string key_clause(const KeyRange& r, const std::string& column = "key") {
  switch (r.kind) {
    case KeyRange::Kind::kOne:
      return column + " = ?1";
    case KeyRange::Kind::kSpan:
      return column + " >= ?1 AND " + column + " < ?2";
    case KeyRange::Kind::kFrom:
      return column + " >= ?1";
  }
  std::abort();
}

void bind_range(sql::Query& q, const KeyRange& r) {
  q.bind(1, r.key);
  if (r.kind == KeyRange::Kind::kSpan) q.bind(2, r.end);
}

// SQLite reads a negative LIMIT as "no limit".
int64_t sql_limit(int64_t limit) { return limit > 0 ? limit : -1; }

// Rows of (key, value, create_rev, mod_rev, version, lease).
Result<std::vector<KeyValue>> collect_kvs(sql::Query& q) {
  std::vector<KeyValue> out;
  while (true) {
    auto row = q.step();
    if (!row.ok()) return row.error();
    if (!*row) return out;
    out.push_back(KeyValue{q.blob(0), q.blob(1), q.i64(2), q.i64(3), q.i64(4), q.i64(5)});
  }
}

Result<int64_t> single_int(sql::Query& q) {
  auto row = q.step();
  if (!row.ok()) return row.error();
  return *row ? q.i64(0) : 0;
}

// Every live key at revision ?4 (key, value, create_rev, rev, version, lease), unordered, with
// no per-key index on history: a key unchanged since ?4 is as kv has it; a key changed after
// ?4 is as its first change after ?4 names it (prev_rev; 0 when that change created it, the key
// being absent at ?4). Costs one scan of the history after ?4.
std::string live_at_sql(const KeyRange& range, bool keys_only) {
  std::string value = keys_only ? "x''" : "value";
  std::string pvalue = keys_only ? "x''" : "p.value";
  return "SELECT key, " + value + " AS value, create_rev, mod_rev AS rev, version, lease FROM kv" +
         " WHERE " + key_clause(range) + " AND mod_rev <= ?4 UNION ALL SELECT p.key, " + pvalue +
         ", p.create_rev, p.rev, p.version, p.lease FROM history AS h JOIN history AS p" +
         " ON p.rev = h.prev_rev AND p.key = h.key WHERE h.rev > ?4 AND h.prev_rev <= ?4 AND " +
         key_clause(range, "h.key") + " AND p.deleted = 0";
}

Result<void> write_meta(sql::Db& db, const char* name, int64_t value) {
  auto q = db.query(std::string("UPDATE meta SET v = ?3 WHERE k = '") + name + "'");
  if (!q.ok()) return q.error();
  return q->bind(3, value).run();
}

// The version of `key` just before `revision`, unless it was deleted or compacted away.
Result<std::optional<KeyValue>> version_before(sql::Db& db, const std::string& key,
                                               int64_t revision, int64_t compact_revision) {
  if (revision - 1 < compact_revision) return std::optional<KeyValue>();
  // The change at `revision` names the version it replaced (prev_rev; 0 for a creation).
  auto q = db.query(
      "SELECT p.value, p.create_rev, p.rev, p.version, p.lease, p.deleted FROM history AS h"
      " JOIN history AS p ON p.rev = h.prev_rev AND p.key = h.key"
      " WHERE h.rev = ?3 AND h.key = ?1");
  if (!q.ok()) return q.error();
  q->bind(1, key).bind(3, revision);
  auto row = q->step();
  if (!row.ok()) return row.error();
  if (!*row || q->i64(5) != 0) return std::optional<KeyValue>();
  return std::optional<KeyValue>(
      KeyValue{key, q->blob(0), q->i64(1), q->i64(2), q->i64(3), q->i64(4)});
}

// One history row (rev, key, value, create_rev, version, lease, deleted) as a watch event.
Event history_event(const sql::Query& q) {
  Event e;
  e.kv.key = q.blob(1);
  e.kv.mod_revision = q.i64(0);
  if (q.i64(6) != 0) {
    e.type = Event::Type::kDelete;  // etcd's delete events carry the key and revision only
    return e;
  }
  e.kv.value = q.blob(2);
  e.kv.create_revision = q.i64(3);
  e.kv.version = q.i64(4);
  e.kv.lease = q.i64(5);
  return e;
}

// etcd attaches no prev_kv to a creation (create_revision == mod_revision).
bool is_create(const Event& e) {
  return e.type == Event::Type::kPut && e.kv.create_revision == e.kv.mod_revision;
}

Result<void> attach_prev_kvs(sql::Db& db, std::vector<RevisionEvents>& revisions,
                             int64_t compact_revision) {
  for (auto& rev : revisions) {
    for (auto& e : rev.events) {
      if (is_create(e)) continue;
      auto prev = version_before(db, e.kv.key, rev.revision, compact_revision);
      if (!prev.ok()) return prev.error();
      e.prev_kv = std::move(*prev);
    }
  }
  return ok();
}

}  // namespace

KeyRange KeyRange::of(std::string_view key, std::string_view range_end) {
  if (range_end.empty()) return {Kind::kOne, std::string(key), {}};
  if (range_end.size() == 1 && range_end[0] == '\0') return {Kind::kFrom, std::string(key), {}};
  return {Kind::kSpan, std::string(key), std::string(range_end)};
}

// std::string compares bytes as unsigned char, the same order as SQLite's BLOB memcmp.
bool KeyRange::contains(std::string_view k) const {
  switch (kind) {
    case Kind::kOne:
      return k == key;
    case Kind::kSpan:
      return k >= key && k < end;
    case Kind::kFrom:
      return k >= key;
  }
  std::abort();
}

// The revision is the newest history row's, or meta's when that is higher: a commit does not
// rewrite meta's revision (that cost every commit one more page in the WAL); compaction, which
// may delete the newest rows (tombstones), and a clean close record it there.
Result<Meta> read_meta(sql::Db& db) {
  auto q = db.query(
      "SELECT max((SELECT v FROM meta WHERE k = 'revision'),"
      " coalesce((SELECT max(rev) FROM history), 0)),"
      " (SELECT v FROM meta WHERE k = 'compact_revision')");
  if (!q.ok()) return q.error();
  auto row = q->step();
  if (!row.ok()) return row.error();
  if (!*row) std::abort();  // a scalar SELECT always returns a row
  return Meta{q->i64(0), q->i64(1)};
}

Result<void> write_revision(sql::Db& db, int64_t revision) {
  return write_meta(db, "revision", revision);
}

Result<void> write_compact_revision(sql::Db& db, int64_t revision) {
  return write_meta(db, "compact_revision", revision);
}

Result<std::optional<KeyValue>> get_current(sql::Db& db, std::string_view key) {
  auto q =
      db.query("SELECT key, value, create_rev, mod_rev, version, lease FROM kv WHERE key = ?1");
  if (!q.ok()) return q.error();
  q->bind(1, key);
  auto kvs = collect_kvs(*q);
  if (!kvs.ok()) return kvs.error();
  if (kvs->empty()) return std::optional<KeyValue>();
  return std::optional<KeyValue>(std::move(kvs->front()));
}

Result<std::vector<KeyValue>> list_current(sql::Db& db, const KeyRange& range, int64_t limit,
                                           bool keys_only) {
  auto q = db.query(std::string("SELECT key, ") + (keys_only ? "x''" : "value") +
                    ", create_rev, mod_rev, version, lease FROM kv WHERE " + key_clause(range) +
                    " ORDER BY key LIMIT ?3");
  if (!q.ok()) return q.error();
  bind_range(*q, range);
  q->bind(3, sql_limit(limit));
  return collect_kvs(*q);
}

Result<int64_t> count_current(sql::Db& db, const KeyRange& range) {
  auto q = db.query(std::string("SELECT count(*) FROM kv WHERE ") + key_clause(range));
  if (!q.ok()) return q.error();
  bind_range(*q, range);
  return single_int(*q);
}

Result<std::vector<KeyValue>> list_by_lease(sql::Db& db, int64_t lease) {
  // "lease != 0" lets SQLite use the partial index kv_by_lease.
  auto q = db.query(
      "SELECT key, value, create_rev, mod_rev, version, lease FROM kv"
      " WHERE lease = ?3 AND lease != 0 ORDER BY key");
  if (!q.ok()) return q.error();
  q->bind(3, lease);
  return collect_kvs(*q);
}

Result<std::vector<KeyValue>> list_at(sql::Db& db, const KeyRange& range, int64_t revision,
                                      int64_t limit, bool keys_only) {
  auto q = db.query("SELECT key, value, create_rev, rev, version, lease FROM (" +
                    live_at_sql(range, keys_only) + ") ORDER BY key LIMIT ?3");
  if (!q.ok()) return q.error();
  bind_range(*q, range);
  q->bind(3, sql_limit(limit)).bind(4, revision);
  return collect_kvs(*q);
}

Result<int64_t> count_at(sql::Db& db, const KeyRange& range, int64_t revision) {
  auto q = db.query("SELECT count(*) FROM (" + live_at_sql(range, true) + ")");
  if (!q.ok()) return q.error();
  bind_range(*q, range);
  q->bind(4, revision);
  return single_int(*q);
}

Result<void> store_put(sql::Db& db, const KeyValue& kv, int64_t sub, int64_t prev_rev) {
  auto cur = db.query(
      "INSERT OR REPLACE INTO kv(key, value, create_rev, mod_rev, version, lease)"
      " VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  if (!cur.ok()) return cur.error();
  cur->bind(1, kv.key).bind(2, kv.value).bind(3, kv.create_revision);
  cur->bind(4, kv.mod_revision).bind(5, kv.version).bind(6, kv.lease);
  QF_TRY(cur->run());
  auto hist = db.query(
      "INSERT INTO history(key, rev, sub, value, create_rev, version, lease, deleted, prev_rev)"
      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8)");
  if (!hist.ok()) return hist.error();
  hist->bind(1, kv.key).bind(2, kv.mod_revision).bind(3, sub).bind(4, kv.value);
  hist->bind(5, kv.create_revision).bind(6, kv.version).bind(7, kv.lease).bind(8, prev_rev);
  return hist->run();
}

Result<void> store_delete(sql::Db& db, std::string_view key, int64_t revision, int64_t sub,
                          int64_t prev_rev) {
  auto cur = db.query("DELETE FROM kv WHERE key = ?1");
  if (!cur.ok()) return cur.error();
  QF_TRY(cur->bind(1, key).run());
  auto hist = db.query(
      "INSERT INTO history(key, rev, sub, value, create_rev, version, lease, deleted, prev_rev)"
      " VALUES (?1, ?2, ?3, x'', 0, 0, 0, 1, ?4)");
  if (!hist.ok()) return hist.error();
  return hist->bind(1, key).bind(2, revision).bind(3, sub).bind(4, prev_rev).run();
}

// Reads at revision >= R need, per key, only the latest version at or below R, and not even
// that when it is a tombstone (as etcd's compaction drops them). A version is superseded when a
// later change names it as its prev_rev.
Result<void> compact_history(sql::Db& db, int64_t revision) {
  auto q = db.query(
      "DELETE FROM history WHERE rev <= ?1 AND (deleted = 1 OR (rev, key) IN (SELECT prev_rev,"
      " key FROM history WHERE rev <= ?1 AND prev_rev > 0))");
  if (!q.ok()) return q.error();
  return q->bind(1, revision).run();
}

Result<std::vector<RevisionEvents>> read_history(sql::Db& db, const KeyRange& range, int64_t from,
                                                 int64_t to, bool prev_kv,
                                                 int64_t compact_revision) {
  auto q = db.query(
      std::string(
          "SELECT rev, key, value, create_rev, version, lease, deleted FROM history WHERE ") +
      key_clause(range) + " AND rev >= ?3 AND rev <= ?4 ORDER BY rev, sub");
  if (!q.ok()) return q.error();
  bind_range(*q, range);
  q->bind(3, from).bind(4, to);
  std::vector<RevisionEvents> out;
  while (true) {
    auto row = q->step();
    if (!row.ok()) return row.error();
    if (!*row) break;
    int64_t rev = q->i64(0);
    if (out.empty() || out.back().revision != rev) out.push_back({rev, {}});
    out.back().events.push_back(history_event(*q));
  }
  if (prev_kv) QF_TRY(attach_prev_kvs(db, out, compact_revision));
  return out;
}

Result<std::vector<std::pair<int64_t, int64_t>>> load_leases(sql::Db& db) {
  auto q = db.query("SELECT id, ttl FROM leases");
  if (!q.ok()) return q.error();
  std::vector<std::pair<int64_t, int64_t>> out;
  while (true) {
    auto row = q->step();
    if (!row.ok()) return row.error();
    if (!*row) return out;
    out.emplace_back(q->i64(0), q->i64(1));
  }
}

Result<void> insert_lease(sql::Db& db, int64_t id, int64_t ttl) {
  auto q = db.query("INSERT INTO leases(id, ttl) VALUES (?1, ?2)");
  if (!q.ok()) return q.error();
  return q->bind(1, id).bind(2, ttl).run();
}

Result<void> delete_lease(sql::Db& db, int64_t id) {
  auto q = db.query("DELETE FROM leases WHERE id = ?1");
  if (!q.ok()) return q.error();
  return q->bind(1, id).run();
}

}  // namespace qufop::keeper
