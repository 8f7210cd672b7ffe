// The etcd v3 KV/lease/watch data model, shared by keeper's store, its HTTP API and the client
// that every daemon uses (against keeper or a real etcd). Field names follow etcd's protobufs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace qufop::keeper {

struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;
  int64_t lease = 0;
  bool operator==(const KeyValue&) const = default;
};

struct ResponseHeader {
  int64_t revision = 0;
};

// Key ranges as etcd has them: range_end empty -> the single key; range_end "\0" -> every key
// >= key; otherwise [key, range_end). prefix_end("a/") == "a0" gives a prefix range.
std::string prefix_end(std::string_view prefix);

struct RangeRequest {
  std::string key;
  std::string range_end;
  int64_t limit = 0;     // 0 = no limit
  int64_t revision = 0;  // 0 = latest; else read as of that revision
  bool keys_only = false;
  bool count_only = false;
};
struct RangeResponse {
  ResponseHeader header;
  std::vector<KeyValue> kvs;
  bool more = false;  // limit cut the result
  int64_t count = 0;  // keys in the range (ignoring limit)
};

struct PutRequest {
  std::string key;
  std::string value;
  int64_t lease = 0;
  bool prev_kv = false;
  bool ignore_value = false;  // keep the current value (update the lease only)
  bool ignore_lease = false;  // keep the current lease
};
struct PutResponse {
  ResponseHeader header;
  std::optional<KeyValue> prev_kv;
};

struct DeleteRangeRequest {
  std::string key;
  std::string range_end;
  bool prev_kv = false;
};
struct DeleteRangeResponse {
  ResponseHeader header;
  int64_t deleted = 0;
  std::vector<KeyValue> prev_kvs;
};

struct Compare {
  enum class Result { kEqual, kGreater, kLess, kNotEqual };
  enum class Target { kVersion, kCreate, kMod, kValue, kLease };
  Result result = Result::kEqual;
  Target target = Target::kVersion;
  std::string key;
  std::string range_end;  // compare every key in the range (all must hold)
  int64_t number = 0;     // version / create_revision / mod_revision / lease
  std::string value;      // for kValue
};

struct RequestOp {
  std::variant<RangeRequest, PutRequest, DeleteRangeRequest> request;
};
struct ResponseOp {
  std::variant<RangeResponse, PutResponse, DeleteRangeResponse> response;
};

struct TxnRequest {
  std::vector<Compare> compare;
  std::vector<RequestOp> success;
  std::vector<RequestOp> failure;
};
struct TxnResponse {
  ResponseHeader header;
  bool succeeded = false;
  std::vector<ResponseOp> responses;
};

struct CompactionRequest {
  int64_t revision = 0;
};
struct CompactionResponse {
  ResponseHeader header;
};

struct LeaseGrantRequest {
  int64_t ttl = 0;  // seconds
  int64_t id = 0;   // 0 = choose one
};
struct LeaseGrantResponse {
  ResponseHeader header;
  int64_t id = 0;
  int64_t ttl = 0;
};
struct LeaseKeepAliveResponse {
  ResponseHeader header;
  int64_t id = 0;
  int64_t ttl = 0;  // the TTL it was renewed to
};
struct LeaseTimeToLiveResponse {
  ResponseHeader header;
  int64_t id = 0;
  int64_t ttl = -1;  // seconds left; -1 when the lease does not exist (expired or revoked)
  int64_t granted_ttl = 0;
  std::vector<std::string> keys;  // when asked for
};

struct Event {
  enum class Type { kPut, kDelete };
  Type type = Type::kPut;
  KeyValue kv;  // for a delete: key and mod_revision (the deletion's revision) only
  std::optional<KeyValue> prev_kv;
  bool operator==(const Event&) const = default;
};

struct WatchCreateRequest {
  std::string key;
  std::string range_end;
  int64_t start_revision = 0;  // 0 = from the next revision
  bool prev_kv = false;
  bool progress_notify = false;
};

// etcd's error vocabulary; codes are gRPC codes (the gateway's "code" field).
struct EtcdError {
  int grpc_code = 0;
  std::string message;  // "etcdserver: mvcc: required revision has been compacted"
};
inline constexpr int kGrpcInvalidArgument = 3;
inline constexpr int kGrpcNotFound = 5;
inline constexpr int kGrpcFailedPrecondition = 9;
inline constexpr int kGrpcOutOfRange = 11;
inline constexpr int kGrpcUnavailable = 14;

// The exact messages etcd uses, so clients can match them against either backend.
inline constexpr const char* kErrCompacted =
    "etcdserver: mvcc: required revision has been compacted";
inline constexpr const char* kErrFutureRev =
    "etcdserver: mvcc: required revision is a future revision";
inline constexpr const char* kErrLeaseNotFound = "etcdserver: requested lease not found";
inline constexpr const char* kErrEmptyKey = "etcdserver: key is not provided";
inline constexpr const char* kErrDuplicateKey = "etcdserver: duplicate key given in txn request";
inline constexpr const char* kErrValueTooLarge = "etcdserver: request is too large";
inline constexpr const char* kErrLeaseExists = "etcdserver: lease already exists";
inline constexpr const char* kErrTooManyOps = "etcdserver: too many operations in txn request";

}  // namespace qufop::keeper
