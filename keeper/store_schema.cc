#include "keeper/store_schema.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <vector>

namespace qufop::keeper {
namespace {

// Migration i takes the schema from version i to i + 1. Append only: a shipped entry never
// changes, because databases in the field already ran it.
//
// kv holds the latest state (fast current reads); history holds every version and tombstone
// (reads at a past revision, watch replay, prev_kv). history is keyed by revision so that a
// batch appends to the same few pages instead of dirtying one random page per write (that
// halved the WAL written per put); per-key lookups follow prev_rev (migration 2). Keys and values
// are BLOBs so they sort bytewise, as etcd's keys.
constexpr std::array<const char*, 3> kMigrations = {
    // 1: the initial schema.
    "CREATE TABLE kv(key BLOB NOT NULL PRIMARY KEY, value BLOB NOT NULL,"
    "  create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, version INTEGER NOT NULL,"
    "  lease INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX kv_by_lease ON kv(lease) WHERE lease != 0;"
    "CREATE TABLE history(rev INTEGER NOT NULL, key BLOB NOT NULL, sub INTEGER NOT NULL,"
    "  value BLOB NOT NULL, create_rev INTEGER NOT NULL, version INTEGER NOT NULL,"
    "  lease INTEGER NOT NULL, deleted INTEGER NOT NULL, PRIMARY KEY(rev, key)) WITHOUT ROWID;"
    "CREATE INDEX history_by_key ON history(key, rev);"
    "CREATE TABLE leases(id INTEGER PRIMARY KEY, ttl INTEGER NOT NULL);"
    // An empty store is at revision 1, as etcd; -1 = never compacted (etcd's compactMainRev).
    "INSERT INTO meta(k, v) VALUES ('revision', 1), ('compact_revision', -1);",
    // 2: history rows name the version they replaced (prev_rev, 0 for a creation) instead of
    // an index by key: history_by_key cost every write a random index page (a third of the WAL
    // written per put). prev_kv, reads at a past revision and compaction follow prev_rev.
    // The backfill uses the index one last time. A creation is a put with create_rev = rev.
    "ALTER TABLE history ADD COLUMN prev_rev INTEGER NOT NULL DEFAULT 0;"
    "UPDATE history SET prev_rev = coalesce((SELECT max(h.rev) FROM history AS h"
    "  WHERE h.key = history.key AND h.rev < history.rev), 0)"
    "  WHERE deleted = 1 OR create_rev != rev;"
    "DROP INDEX history_by_key;",
    // 3: commits no longer rewrite meta.revision (one WAL page fewer per put); the revision is
    // the larger of it and the newest history row. Nothing to change in the data: the version
    // bump keeps an older keeper, which would trust meta.revision alone, from opening it.
    "SELECT 1;",
};

const char* kRestoreHint = "restore a backup with `qufop-keeper restore BACKUP --data-dir DIR`";

Error corrupt(const std::string& path, const std::string& detail) {
  return Error::io("keeper database " + path + " is corrupt (integrity_check: " + detail + "); " +
                   kRestoreHint);
}

bool is_corruption(const Error& e) {
  return e.message.find("not a database") != std::string::npos ||
         e.message.find("malformed") != std::string::npos;
}

// PRAGMA integrity_check answers "ok" or a list of problems; a file that is not SQLite at all
// fails the statement itself.
Result<void> check_integrity(sql::Db& db) {
  auto q = db.query("PRAGMA integrity_check");
  if (!q.ok()) return is_corruption(q.error()) ? corrupt(db.path(), q.error().message) : q.error();
  std::string problems;
  while (true) {
    auto row = q->step();
    if (!row.ok()) {
      return is_corruption(row.error()) ? corrupt(db.path(), row.error().message) : row.error();
    }
    if (!*row) break;
    std::string line = q->blob(0);
    if (line == "ok") continue;
    problems += (problems.empty() ? "" : "; ") + line;
  }
  if (!problems.empty()) return corrupt(db.path(), problems);
  return ok();
}

Result<void> set_pragmas(sql::Db& db) {
  // WAL: readers never block on the writer; FULL: every COMMIT fsyncs the WAL, so an
  // acknowledged write survives power loss. busy_timeout only matters if another process
  // holds the file (then writes fail with Unavailable rather than hang). wal_autocheckpoint:
  // checkpoint every 10,000 WAL pages (about 40 MB) rather than SQLite's 1,000, so a kv page
  // rewritten by many batches is copied into the database once per checkpoint, not once per
  // few batches (under 64 writers it cut the commit time by about a fifth).
  QF_TRY(db.exec(
      "PRAGMA busy_timeout=1000; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
      "PRAGMA cache_size=-16384; PRAGMA foreign_keys=OFF; PRAGMA wal_autocheckpoint=10000"));
  auto q = db.query("PRAGMA journal_mode");
  if (!q.ok()) return q.error();
  auto row = q->step();
  if (!row.ok()) return row.error();
  if (!*row || q->blob(0) != "wal") {
    return Error::io("keeper database " + db.path() + ": cannot switch to WAL mode");
  }
  return ok();
}

Result<int64_t> read_schema_version(sql::Db& db) {
  QF_TRY(db.exec("CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL)"));
  auto q = db.query("SELECT v FROM meta WHERE k = 'schema_version'");
  if (!q.ok()) return q.error();
  auto row = q->step();
  if (!row.ok()) return row.error();
  return *row ? q->i64(0) : 0;
}

Result<void> apply_migration(sql::Db& db, int64_t version) {
  QF_TRY(db.run("BEGIN IMMEDIATE"));
  auto applied = db.exec(kMigrations[static_cast<size_t>(version)]);
  if (applied.ok()) {
    applied = db.exec("INSERT OR REPLACE INTO meta(k, v) VALUES ('schema_version', " +
                      std::to_string(version + 1) + ")");
  }
  if (applied.ok()) applied = db.run("COMMIT");
  if (!applied.ok()) {
    (void)db.run("ROLLBACK");
    return applied.error().wrap("migrating keeper schema to version " +
                                std::to_string(version + 1));
  }
  return ok();
}

Result<void> migrate(sql::Db& db) {
  auto version = read_schema_version(db);
  if (!version.ok()) return version.error();
  if (*version > schema_version()) {
    return Error{"conflict",
                 "keeper database " + db.path() + " has schema version " +
                     std::to_string(*version) + ", newer than this qufop-keeper (" +
                     std::to_string(schema_version()) + "); run a newer qufop-keeper",
                 0};
  }
  for (int64_t v = *version; v < schema_version(); ++v) QF_TRY(apply_migration(db, v));
  return ok();
}

// Extends the WAL file with zeros up to `bytes`, so that commits overwrite blocks the file
// already has: an fdatasync that must also write the inode for a new size costs one more
// synchronous device write (measured here: ~185 us per commit appending, ~125 us overwriting).
// Safe under SQLite: it stops reading a WAL at the first frame whose salts and checksum do not
// match its header, and zeros never do; only the bytes past the current end are written, so
// the frames of a WAL that still needs recovery stay as they are. The caller holds the store's
// lock, and the connection has no transaction open.
Result<void> presize_wal(const std::string& wal_path, int64_t bytes) {
  int fd = ::open(wal_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Error::sys("open(" + wal_path + ")", errno);
  struct stat st {};
  int err = 0;
  std::string failed;
  if (::fstat(fd, &st) != 0) {
    err = errno;
    failed = "fstat";
  }
  const std::vector<char> zeros(1 << 20, 0);
  for (off_t at = st.st_size; err == 0 && at < bytes;) {
    size_t n = static_cast<size_t>(std::min<int64_t>(bytes - at, zeros.size()));
    ssize_t wrote = ::pwrite(fd, zeros.data(), n, at);
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote <= 0) {
      err = wrote < 0 ? errno : EIO;
      failed = "pwrite";
      break;
    }
    at += wrote;
  }
  if (err == 0 && st.st_size < bytes && ::fdatasync(fd) != 0) {
    err = errno;
    failed = "fdatasync";
  }
  ::close(fd);
  if (err != 0) return Error::sys(failed + "(" + wal_path + ") pre-sizing the WAL", err);
  return ok();
}

}  // namespace

int schema_version() { return static_cast<int>(kMigrations.size()); }

Result<sql::Db> open_writer_db(const std::string& path, int64_t wal_bytes) {
  auto db = sql::Db::open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  if (!db.ok()) return db.error().wrap("opening keeper database");
  // Before anything writes to the file: a damaged database must not be touched further.
  QF_TRY(check_integrity(*db));
  QF_TRY(set_pragmas(*db));
  QF_TRY(migrate(*db));
  if (wal_bytes > 0) {
    // After the migrations: SQLite deletes a WAL it finds next to an empty database. The size
    // limit keeps the WAL at its pre-sized length after a burst that outgrew it (SQLite
    // truncates it when it starts over), rather than at the burst's.
    QF_TRY(db->exec("PRAGMA journal_size_limit=" + std::to_string(wal_bytes)));
    QF_TRY(presize_wal(path + "-wal", wal_bytes));
  }
  return db;
}

Result<sql::Db> open_reader_db(const std::string& path) {
  auto db = sql::Db::open(path, SQLITE_OPEN_READWRITE);
  if (!db.ok()) return db.error().wrap("opening keeper database reader");
  QF_TRY(db->exec("PRAGMA busy_timeout=5000; PRAGMA query_only=1; PRAGMA cache_size=-8192"));
  return db;
}

}  // namespace qufop::keeper
