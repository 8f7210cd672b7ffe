#include "scheduler/records.h"

#include "keeper/client.h"

namespace qufop::scheduler {

namespace {

constexpr size_t kMaxOpsPerTxn = 100;

template <typename T>
void load_prefix(const std::vector<keeper::KeyValue>& kvs, std::string_view prefix,
                 Result<T> (*from)(const json::Value&), std::vector<T>& out,
                 std::vector<std::string>& skipped) {
  for (const auto& kv : kvs) {
    if (!kv.key.starts_with(prefix)) continue;
    auto record = api::parse_record(kv.value, from);
    if (!record) {
      skipped.push_back(kv.key + ": " + record.error().message);
      continue;
    }
    out.push_back(std::move(*record));
  }
}

}  // namespace

void Batch::put(std::string key, const json::Value& value) {
  puts.emplace_back(std::move(key), json::serialize(value));
}

Result<Snapshot> RecordStore::load() {
  Snapshot s;
  // One range per prefix, all as of the first one's revision: a consistent snapshot.
  struct Prefix {
    std::string_view prefix;
    std::vector<keeper::KeyValue> kvs;
  };
  Prefix prefixes[] = {{api::kUfopsPrefix, {}},
                       {api::kVersionsPrefix, {}},
                       {api::kInstancesPrefix, {}},
                       {api::kNodesPrefix, {}}};
  for (auto& p : prefixes) {
    keeper::RangeRequest r;
    r.key = std::string(p.prefix);
    r.range_end = keeper::prefix_end(p.prefix);
    r.revision = s.revision;
    auto res = client_.range(r);
    if (!res) return res.error().wrap("reading " + std::string(p.prefix) + " from keeper");
    if (s.revision == 0) s.revision = res->header.revision;
    p.kvs = std::move(res->kvs);
  }
  load_prefix(prefixes[0].kvs, api::kUfopsPrefix, api::ufop_from_json, s.ufops, s.skipped);
  load_prefix(prefixes[1].kvs, api::kVersionsPrefix, api::version_from_json, s.versions, s.skipped);
  load_prefix(prefixes[2].kvs, api::kInstancesPrefix, api::instance_from_json, s.instances,
              s.skipped);
  load_prefix(prefixes[3].kvs, api::kNodesPrefix, api::node_from_json, s.nodes, s.skipped);
  return s;
}

Result<int64_t> RecordStore::apply(const Batch& batch) {
  std::vector<keeper::RequestOp> ops;
  for (const auto& [key, value] : batch.puts) {
    keeper::PutRequest p;
    p.key = key;
    p.value = value;
    ops.push_back({p});
  }
  for (const auto& key : batch.deletes) {
    keeper::DeleteRangeRequest d;
    d.key = key;
    ops.push_back({d});
  }
  int64_t revision = 0;
  for (size_t i = 0; i < ops.size(); i += kMaxOpsPerTxn) {
    keeper::TxnRequest txn;
    size_t end = std::min(ops.size(), i + kMaxOpsPerTxn);
    txn.success.assign(ops.begin() + static_cast<std::ptrdiff_t>(i),
                       ops.begin() + static_cast<std::ptrdiff_t>(end));
    auto res = client_.txn(txn);
    if (!res) return res.error().wrap("writing to keeper");
    revision = res->header.revision;
  }
  return revision;
}

Result<bool> RecordStore::create(const std::string& key, const json::Value& value) {
  keeper::TxnRequest txn;
  keeper::Compare absent;
  absent.key = key;
  absent.target = keeper::Compare::Target::kCreate;
  absent.result = keeper::Compare::Result::kEqual;
  absent.number = 0;
  txn.compare.push_back(absent);
  keeper::PutRequest p;
  p.key = key;
  p.value = json::serialize(value);
  txn.success.push_back({p});
  auto res = client_.txn(txn);
  if (!res) return res.error().wrap("writing to keeper");
  return res->succeeded;
}

}  // namespace qufop::scheduler
