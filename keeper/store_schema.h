// Opening keeper's SQLite file: refuse a corrupt one, WAL + synchronous=FULL, and bring the
// schema up to date through an ordered list of migrations.
#pragma once

#include <string>

#include "common/result.h"
#include "keeper/store_sqlite.h"

namespace qufop::keeper {

// The schema version this build writes (the number of migrations).
int schema_version();

// The writer's connection: integrity-checked, in WAL mode, migrated; with wal_bytes > 0 the WAL
// file is extended with zeros to that size (commits then overwrite rather than append).
Result<sql::Db> open_writer_db(const std::string& path, int64_t wal_bytes = 0);
// A reader's connection (WAL reader); the writer's connection must be open already.
Result<sql::Db> open_reader_db(const std::string& path);

}  // namespace qufop::keeper
