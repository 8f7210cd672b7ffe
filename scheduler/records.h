// The scheduler's records in keeper (common/api.h names the keys): loaded whole at start, then
// changed in batches, each batch in as few transactions as the backend allows (etcd refuses
// more than 128 operations in one).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "common/api.h"
#include "common/result.h"

namespace qufop::keeper {
class Client;
}

namespace qufop::scheduler {

struct Snapshot {
  std::vector<api::UfopRecord> ufops;
  std::vector<api::VersionRecord> versions;
  std::vector<api::InstanceRecord> instances;
  std::vector<api::NodeRecord> nodes;
  int64_t revision = 0;
  std::vector<std::string> skipped;  // "<key>: <why>" for records that do not parse
};

// Puts and deletes written together.
struct Batch {
  std::vector<std::pair<std::string, std::string>> puts;
  std::vector<std::string> deletes;
  bool empty() const { return puts.empty() && deletes.empty(); }
  void put(std::string key, const json::Value& value);
  void erase(std::string key) { deletes.push_back(std::move(key)); }
};

class RecordStore {
 public:
  explicit RecordStore(keeper::Client& client) : client_(client) {}

  Result<Snapshot> load();
  // Writes the batch; the revision after it. Durable when it returns ok.
  Result<int64_t> apply(const Batch& batch);
  // Puts `value` at `key` only when the key does not exist: false when it did.
  Result<bool> create(const std::string& key, const json::Value& value);

 private:
  keeper::Client& client_;
};

}  // namespace qufop::scheduler
