// keeper's thin layer over the SQLite C API: an owning connection with a prepared-statement
// cache, and Query, one use of a cached statement. SQLite failures come back as Result errors
// (code "unavailable", the message names SQLite's error and the statement).
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/result.h"

namespace qufop::keeper::sql {

// "sqlite: database is locked (BEGIN IMMEDIATE)" from the connection's last error.
Error failure(sqlite3* db, int rc, std::string_view context);

// One use of a cached prepared statement. Resets it when it goes out of scope, so a statement
// that was not stepped to the end never keeps a read snapshot open behind the caller's back.
class Query {
 public:
  explicit Query(sqlite3_stmt* stmt) : stmt_(stmt) {}
  Query(Query&& other) noexcept : stmt_(other.stmt_) { other.stmt_ = nullptr; }
  Query& operator=(Query&&) = delete;
  ~Query();

  Query& bind(int index, int64_t value);
  Query& bind(int index, std::string_view blob);  // keys and values are BLOBs: byte order

  Result<bool> step();  // true: a row is ready; false: done
  Result<void> run();   // steps to the end (statements without rows)

  int64_t i64(int column) const;
  std::string blob(int column) const;

 private:
  sqlite3_stmt* stmt_;
};

class Db {
 public:
  // flags: SQLITE_OPEN_*; the connection is used by one thread at a time (NOMUTEX is added).
  static Result<Db> open(const std::string& path, int flags);

  Db(Db&&) noexcept = default;
  Db& operator=(Db&&) noexcept = default;

  // Runs one or more statements whose rows we do not need (migrations, PRAGMA x=y).
  Result<void> exec(const std::string& sql);
  // Runs one statement without rows through the cache (BEGIN, COMMIT, ROLLBACK).
  Result<void> run(const std::string& sql);
  // The cached prepared statement for `sql`, ready to bind.
  Result<Query> query(const std::string& sql);

  sqlite3* handle() const { return db_.get(); }
  const std::string& path() const { return path_; }

 private:
  struct Close {
    void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
  };
  struct Finalize {
    void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
  };
  Db(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}

  std::unique_ptr<sqlite3, Close> db_;
  std::string path_;
  // Declared after db_: statements are finalized before the connection closes.
  std::unordered_map<std::string, std::unique_ptr<sqlite3_stmt, Finalize>> cache_;
};

// A read snapshot over several queries: BEGIN now, ended (ROLLBACK: nothing to undo) when it
// goes out of scope. WAL readers never wait for the writer's fsync.
class ReadTxn {
 public:
  static Result<ReadTxn> begin(Db& db);
  ReadTxn(ReadTxn&& other) noexcept : db_(other.db_) { other.db_ = nullptr; }
  ReadTxn& operator=(ReadTxn&&) = delete;
  ~ReadTxn();

 private:
  explicit ReadTxn(Db* db) : db_(db) {}
  Db* db_;
};

}  // namespace qufop::keeper::sql
