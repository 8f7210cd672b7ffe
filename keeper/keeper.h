// qufop-keeper: cluster state — the etcd v3 API (JSON gateway form) served from SQLite.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"
#include "common/daemon.h"

namespace qufop::keeper {

const DaemonInfo& info();
// The flags of qufop-keeper beyond the common ones.
std::vector<FlagSpec> flags();
// Serves until SIGTERM/SIGINT; returns the exit code.
int run(const DaemonOptions& options);

// `qufop-keeper backup FILE [--data-dir DIR]`: an online, consistent copy of the database, safe
// while the keeper runs. `qufop-keeper restore FILE [--data-dir DIR]`: replaces the database
// with a checked backup; refused while a keeper runs on that data dir.
int backup_main(int argc, const char* const* argv);
int restore_main(int argc, const char* const* argv);

// DIR/keeper/keeper.db
std::string database_path(const std::string& data_dir);

}  // namespace qufop::keeper
