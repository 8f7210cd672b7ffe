#include "keeper/keeper.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "common/http_server.h"
#include "common/metrics.h"
#include "keeper/api.h"
#include "keeper/store.h"

namespace qufop::keeper {

const DaemonInfo& info() {
  static const DaemonInfo kInfo{"keeper", "qufop-keeper",
                                "Cluster state: the etcd v3 API served from SQLite.\n"
                                "Also: qufop-keeper backup FILE | restore FILE [--data-dir DIR]",
                                "127.0.0.1:7100"};
  return kInfo;
}

// Store calls block no thread (writes complete from the group commit, reads do not wait for
// fsync), so the io threads do all the request work. Two by default: with one, a single
// client's put took several times longer on the 2-core VM of bench/keeper (the lone thread
// sleeps between requests and wakes late), though one thread needs fewer hand-offs.
std::vector<FlagSpec> flags() {
  return {{"io-threads", "N", "threads serving HTTP: parsing, reads, responses", "2"},
          {"wal-preallocate-mb", "MB",
           "size the SQLite WAL file is extended to with zeros at start (0: none); commits "
           "that overwrite pre-allocated blocks fsync faster than appends",
           "48"}};
}

std::string database_path(const std::string& data_dir) { return data_dir + "/keeper/keeper.db"; }

namespace {

// An exclusive lock on DIR/keeper/keeper.lock: one keeper per data dir, and no restore under a
// running keeper. The fd stays open (and locked) for the life of the process.
Result<int> lock_data_dir(const std::string& state_dir) {
  std::string path = state_dir + "/keeper.lock";
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Error::sys("open(" + path + ")", errno);
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    close(fd);
    if (err == EWOULDBLOCK) {
      return Error{"unavailable", "another qufop-keeper uses " + state_dir + "; stop it first",
                   err};
    }
    return Error::sys("flock(" + path + ")", err);
  }
  return fd;
}

// FILE plus --data-dir for the backup and restore subcommands.
struct FileCommand {
  std::string file;
  std::string data_dir;
};

std::optional<FileCommand> parse_file_command(const char* name, int argc, const char* const* argv,
                                              int* exit_code) {
  Flags f(std::string("qufop-keeper ") + name,
          std::string("usage: qufop-keeper ") + name + " FILE [--data-dir DIR]",
          {{"data-dir", "DIR", "root of the node's qufop data", kDefaultDataDir}});
  auto r = f.parse(argc, argv);
  *exit_code = 2;
  if (!r) {
    report_fatal(f.program(), r.error().message);
    return std::nullopt;
  }
  if (f.help_requested()) {
    std::fputs(f.usage().c_str(), stdout);
    *exit_code = 0;
    return std::nullopt;
  }
  if (f.positional().size() != 1) {
    report_fatal(f.program(), "expected one FILE (see --help)");
    return std::nullopt;
  }
  return FileCommand{f.positional()[0], f.get("data-dir")};
}

}  // namespace

int backup_main(int argc, const char* const* argv) {
  int code;
  auto cmd = parse_file_command("backup", argc, argv, &code);
  if (!cmd) return code;
  std::string db = database_path(cmd->data_dir);
  if (!std::filesystem::exists(db)) {
    return report_fatal("qufop-keeper backup",
                        "no keeper database at " + db + " (check --data-dir)");
  }
  auto store = Store::open({.path = db});
  if (!store) {
    return report_fatal("qufop-keeper backup", store.error().message);
  }
  if (auto r = (*store)->backup(cmd->file); !r) {
    return report_fatal("qufop-keeper backup", r.error().message);
  }
  std::printf("backed up %s at revision %lld to %s\n", db.c_str(),
              static_cast<long long>((*store)->revision()), cmd->file.c_str());
  return 0;
}

int restore_main(int argc, const char* const* argv) {
  int code;
  auto cmd = parse_file_command("restore", argc, argv, &code);
  if (!cmd) return code;
  const char* prog = "qufop-keeper restore";
  std::string state_dir = cmd->data_dir + "/keeper";
  if (auto r = make_dirs(state_dir, 0700); !r) return report_fatal(prog, r.error().message);
  auto lock = lock_data_dir(state_dir);
  if (!lock) return report_fatal(prog, lock.error().message);
  std::string db = database_path(cmd->data_dir);
  std::string staged = db + ".restore";
  std::error_code ec;
  std::filesystem::copy_file(cmd->file, staged, std::filesystem::copy_options::overwrite_existing,
                             ec);
  if (ec) return report_fatal(prog, "copy " + cmd->file + ": " + ec.message());
  int64_t revision = 0;
  {
    // Opening checks integrity and migrates the schema before it replaces anything.
    auto store = Store::open({.path = staged});
    if (!store) {
      std::filesystem::remove(staged, ec);
      return report_fatal(prog, cmd->file + " is not a usable backup: " + store.error().message);
    }
    revision = (*store)->revision();
  }
  for (const char* suffix : {"-wal", "-shm"}) std::filesystem::remove(db + suffix, ec);
  std::filesystem::rename(staged, db, ec);
  if (ec) return report_fatal(prog, "rename to " + db + ": " + ec.message());
  std::printf("restored %s at revision %lld from %s\n", db.c_str(),
              static_cast<long long>(revision), cmd->file.c_str());
  return 0;
}

int run(const DaemonOptions& options) {
  const std::string& binary = options.info.binary;
  auto io_threads = options.flags.get_int("io-threads", 1, 256);
  if (!io_threads) return report_fatal(binary, io_threads.error().message, 2);
  if (auto r = make_dirs(options.state_dir(), 0700); !r) {
    return report_fatal(binary, "data dir: " + r.error().message);
  }
  auto lock = lock_data_dir(options.state_dir());
  if (!lock) return report_fatal(binary, lock.error().message);
  auto wal_mb = options.flags.get_int("wal-preallocate-mb", 0, 4096);
  if (!wal_mb) return report_fatal(binary, wal_mb.error().message, 2);
  // The io threads may commit a lone write themselves (blocking for its fsync) while the
  // writer is idle; under load writes go to the writer thread in batches. Not with a single io
  // thread: while it waits out an fsync no other request is read, so no batch could ever form
  // (64 clients got 300 puts/s).
  auto store = Store::open({.path = database_path(options.data_dir),
                            .wal_preallocate_bytes = *wal_mb << 20,
                            .commit_on_idle_caller = *io_threads > 1});
  if (!store) return report_fatal(binary, store.error().message);
  spdlog::debug("store {} at revision {}", database_path(options.data_dir), (*store)->revision());
  Daemon daemon(options, static_cast<int>(*io_threads));
  Api api(daemon.io(), daemon.server(), **store, daemon.metrics());
  daemon.on_stop([&api] { api.shutdown(); });
  return daemon.run();
}

}  // namespace qufop::keeper
