#include "keeper/store_sqlite.h"

#include <cstdlib>

namespace qufop::keeper::sql {

Error failure(sqlite3* db, int rc, std::string_view context) {
  std::string what = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  return {"unavailable", "sqlite: " + what + " (" + std::string(context) + ")", 0};
}

Query::~Query() {
  if (stmt_ == nullptr) return;
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

// Binding fails only for a wrong index or out of memory: both are bugs or fatal, so abort.
Query& Query::bind(int index, int64_t value) {
  if (sqlite3_bind_int64(stmt_, index, value) != SQLITE_OK) std::abort();
  return *this;
}

Query& Query::bind(int index, std::string_view blob) {
  // A null pointer would bind NULL; an empty key or value must stay an empty BLOB.
  const char* data = blob.data() != nullptr ? blob.data() : "";
  if (sqlite3_bind_blob64(stmt_, index, data, blob.size(), SQLITE_STATIC) != SQLITE_OK) {
    std::abort();
  }
  return *this;
}

Result<bool> Query::step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return failure(sqlite3_db_handle(stmt_), rc, sqlite3_sql(stmt_));
}

Result<void> Query::run() {
  while (true) {
    auto row = step();
    if (!row.ok()) return row.error();
    if (!*row) return ok();
  }
}

int64_t Query::i64(int column) const { return sqlite3_column_int64(stmt_, column); }

std::string Query::blob(int column) const {
  const void* data = sqlite3_column_blob(stmt_, column);
  int size = sqlite3_column_bytes(stmt_, column);
  if (data == nullptr || size <= 0) return {};
  return std::string(static_cast<const char*>(data), static_cast<size_t>(size));
}

Result<Db> Db::open(const std::string& path, int flags) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  Db db(raw, path);  // owns the handle even when opening failed
  if (rc != SQLITE_OK) return failure(raw, rc, "open " + path);
  sqlite3_extended_result_codes(raw, 1);
  return db;
}

Result<void> Db::exec(const std::string& sql) {
  int rc = sqlite3_exec(db_.get(), sql.c_str(), nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return failure(db_.get(), rc, sql);
  return ok();
}

Result<void> Db::run(const std::string& sql) {
  auto q = query(sql);
  if (!q.ok()) return q.error();
  return q->run();
}

Result<Query> Db::query(const std::string& sql) {
  auto it = cache_.find(sql);
  if (it == cache_.end()) {
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v3(db_.get(), sql.c_str(), static_cast<int>(sql.size()),
                                SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) return failure(db_.get(), rc, sql);
    it = cache_.emplace(sql, std::unique_ptr<sqlite3_stmt, Finalize>(stmt)).first;
  }
  return Query(it->second.get());
}

Result<ReadTxn> ReadTxn::begin(Db& db) {
  QF_TRY(db.run("BEGIN"));
  return ReadTxn(&db);
}

ReadTxn::~ReadTxn() {
  if (db_ != nullptr) (void)db_->run("ROLLBACK");
}

}  // namespace qufop::keeper::sql
