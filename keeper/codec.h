// etcd v3's JSON gateway encoding (grpc-gateway, proto3 JSON with original field names): bytes
// as standard base64, int64 as strings, zero values omitted, enums by name. Shared by keeper's
// HTTP API and the client, so both speak exactly what etcd speaks.
#pragma once

#include <string>
#include <string_view>

#include "common/json.h"
#include "common/result.h"
#include "keeper/types.h"

namespace qufop::keeper::codec {

// Requests: parse (server side) and encode (client side). Parse errors are Error::invalid with a
// message naming the field: "field 'key': not valid base64".
Result<RangeRequest> parse_range(const json::Value& v);
Result<PutRequest> parse_put(const json::Value& v);
Result<DeleteRangeRequest> parse_delete_range(const json::Value& v);
Result<TxnRequest> parse_txn(const json::Value& v);
Result<CompactionRequest> parse_compaction(const json::Value& v);
Result<LeaseGrantRequest> parse_lease_grant(const json::Value& v);
Result<int64_t> parse_lease_id(const json::Value& v);  // {"ID": "..."}
// {"ID": "...", "keys": true}
Result<std::pair<int64_t, bool>> parse_lease_time_to_live(const json::Value& v);
// {"create_request": {...}}
Result<WatchCreateRequest> parse_watch_create(const json::Value& v);

json::Value encode(const RangeRequest& r);
json::Value encode(const PutRequest& r);
json::Value encode(const DeleteRangeRequest& r);
json::Value encode(const TxnRequest& r);
json::Value encode(const CompactionRequest& r);
json::Value encode(const LeaseGrantRequest& r);
json::Value encode_lease_id(int64_t id);
json::Value encode_lease_time_to_live(int64_t id, bool keys);
json::Value encode_watch_create(const WatchCreateRequest& r);

// Responses: encode (server side) and parse (client side).
json::Value encode(const RangeResponse& r);
json::Value encode(const PutResponse& r);
json::Value encode(const DeleteRangeResponse& r);
json::Value encode(const TxnResponse& r);
json::Value encode(const CompactionResponse& r);
json::Value encode(const LeaseGrantResponse& r);
json::Value encode(const LeaseKeepAliveResponse& r);  // wrapped as {"result": {...}} by the API
json::Value encode(const LeaseTimeToLiveResponse& r);
json::Value encode_header(const ResponseHeader& h);

Result<RangeResponse> parse_range_response(const json::Value& v);
Result<PutResponse> parse_put_response(const json::Value& v);
Result<DeleteRangeResponse> parse_delete_range_response(const json::Value& v);
Result<TxnResponse> parse_txn_response(const json::Value& v);
Result<CompactionResponse> parse_compaction_response(const json::Value& v);
Result<LeaseGrantResponse> parse_lease_grant_response(const json::Value& v);
Result<LeaseKeepAliveResponse> parse_lease_keepalive_response(const json::Value& v);
Result<LeaseTimeToLiveResponse> parse_lease_time_to_live_response(const json::Value& v);

// One message of the watch stream: {"result": {"header":…, "watch_id":…, "created":…,
// "canceled":…, "compact_revision":…, "events":[…]}}.
struct WatchMessage {
  ResponseHeader header;
  int64_t watch_id = 0;
  bool created = false;
  bool canceled = false;
  int64_t compact_revision = 0;
  std::string cancel_reason;
  std::vector<Event> events;
};
json::Value encode(const WatchMessage& m);
Result<WatchMessage> parse_watch_message(const json::Value& v);

// {"error": message, "code": grpc_code, "message": message}, etcd's gateway error body; also
// parses one (client side) into an EtcdError.
json::Value encode(const EtcdError& e);
std::optional<EtcdError> parse_error(const json::Value& v);

}  // namespace qufop::keeper::codec
