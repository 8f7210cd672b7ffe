#include "keeper/codec.h"

#include <array>
#include <charconv>
#include <cmath>
#include <optional>

namespace qufop::keeper::codec {
namespace {

// ---------------------------------------------------------------------------------------------
// Base64: proto3 JSON writes bytes as standard, padded base64 and reads standard or URL-safe,
// padded or not.

constexpr std::string_view kBase64 =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t n = static_cast<uint8_t>(in[i]) << 16 | static_cast<uint8_t>(in[i + 1]) << 8 |
                 static_cast<uint8_t>(in[i + 2]);
    for (int shift : {18, 12, 6, 0}) out += kBase64[(n >> shift) & 63];
  }
  size_t rest = in.size() - i;
  if (rest == 0) return out;
  uint32_t n = static_cast<uint8_t>(in[i]) << 16;
  if (rest == 2) n |= static_cast<uint8_t>(in[i + 1]) << 8;
  out += kBase64[(n >> 18) & 63];
  out += kBase64[(n >> 12) & 63];
  out += rest == 2 ? kBase64[(n >> 6) & 63] : '=';
  out += '=';
  return out;
}

int base64_digit(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

std::optional<std::string> base64_decode(std::string_view in) {
  size_t pad = 0;
  while (!in.empty() && in.back() == '=') {
    in.remove_suffix(1);
    ++pad;
  }
  if (pad > 2 || (pad > 0 && (in.size() + pad) % 4 != 0) || in.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(in.size() * 3 / 4);
  uint32_t bits = 0;
  int nbits = 0;
  for (char c : in) {
    int d = base64_digit(c);
    if (d < 0) return std::nullopt;
    bits = (bits << 6) | static_cast<uint32_t>(d);
    nbits += 6;
    if (nbits >= 8) {
      nbits -= 8;
      out += static_cast<char>((bits >> nbits) & 0xff);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writing: proto3 JSON omits zero values; int64 travels as a decimal string.

void set_bytes(json::Object& o, std::string_view name, std::string_view s) {
  if (!s.empty()) o[name] = base64_encode(s);
}
void set_int(json::Object& o, std::string_view name, int64_t v) {
  if (v != 0) o[name] = std::to_string(v);
}
void set_bool(json::Object& o, std::string_view name, bool b) {
  if (b) o[name] = true;
}

constexpr std::array<std::string_view, 4> kCompareResults = {"EQUAL", "GREATER", "LESS",
                                                             "NOT_EQUAL"};
constexpr std::array<std::string_view, 5> kCompareTargets = {"VERSION", "CREATE", "MOD", "VALUE",
                                                             "LEASE"};
// The member of Compare's target_union that each target uses.
constexpr std::array<std::string_view, 5> kCompareUnion = {"version", "create_revision",
                                                           "mod_revision", "value", "lease"};
constexpr std::array<std::string_view, 2> kEventTypes = {"PUT", "DELETE"};

json::Object write_header(const ResponseHeader& h) {
  json::Object o;
  set_int(o, "revision", h.revision);
  return o;
}

json::Object write_kv(const KeyValue& kv) {
  json::Object o;
  set_bytes(o, "key", kv.key);
  set_int(o, "create_revision", kv.create_revision);
  set_int(o, "mod_revision", kv.mod_revision);
  set_int(o, "version", kv.version);
  set_bytes(o, "value", kv.value);
  set_int(o, "lease", kv.lease);
  return o;
}

json::Array write_kvs(const std::vector<KeyValue>& kvs) {
  json::Array a;
  for (const auto& kv : kvs) a.push_back(write_kv(kv));
  return a;
}

json::Object write_compare(const Compare& c) {
  json::Object o;
  auto result = static_cast<size_t>(c.result);
  auto target = static_cast<size_t>(c.target);
  if (result != 0) o["result"] = kCompareResults[result];
  if (target != 0) o["target"] = kCompareTargets[target];
  set_bytes(o, "key", c.key);
  // A set oneof member is written even when it holds its zero value.
  if (c.target == Compare::Target::kValue) {
    o[kCompareUnion[target]] = base64_encode(c.value);
  } else {
    o[kCompareUnion[target]] = std::to_string(c.number);
  }
  set_bytes(o, "range_end", c.range_end);
  return o;
}

json::Object write_request_op(const RequestOp& op) {
  json::Object o;
  if (auto* r = std::get_if<RangeRequest>(&op.request)) o["request_range"] = encode(*r);
  if (auto* r = std::get_if<PutRequest>(&op.request)) o["request_put"] = encode(*r);
  if (auto* r = std::get_if<DeleteRangeRequest>(&op.request))
    o["request_delete_range"] = encode(*r);
  return o;
}

json::Object write_response_op(const ResponseOp& op) {
  json::Object o;
  if (auto* r = std::get_if<RangeResponse>(&op.response)) o["response_range"] = encode(*r);
  if (auto* r = std::get_if<PutResponse>(&op.response)) o["response_put"] = encode(*r);
  if (auto* r = std::get_if<DeleteRangeResponse>(&op.response)) {
    o["response_delete_range"] = encode(*r);
  }
  return o;
}

json::Object write_event(const Event& e) {
  json::Object o;
  if (e.type == Event::Type::kDelete) o["type"] = kEventTypes[1];
  o["kv"] = write_kv(e.kv);
  if (e.prev_kv) o["prev_kv"] = write_kv(*e.prev_kv);
  return o;
}

// ---------------------------------------------------------------------------------------------
// Reading: one Reader per JSON object, named by its path from the root ("compare[1]"). The
// first error sticks in the shared slot and later reads return defaults, so a parser reads every
// field straight through and checks once at the end. Absent and null fields are zero values.

std::optional<int64_t> to_int64(const json::Value& v) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64() && v.get_uint64() <= INT64_MAX) return static_cast<int64_t>(v.get_uint64());
  if (v.is_double()) {
    double d = v.get_double();
    if (std::trunc(d) == d && std::fabs(d) < 9.2e18) return static_cast<int64_t>(d);
    return std::nullopt;
  }
  if (!v.is_string()) return std::nullopt;
  std::string_view s = v.get_string();
  int64_t out = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return out;
}

class Reader {
 public:
  Reader(const json::Value* v, std::string path, std::optional<Error>* error)
      : path_(std::move(path)), error_(error) {
    if (v && v->is_object()) {
      obj_ = &v->get_object();
    } else if (v && !v->is_null()) {
      fail_here("expected a JSON object");
    }
  }

  bool has(std::string_view field) const { return find(field) != nullptr; }

  void fail(std::string_view field, std::string_view what) const { fail_at(name(field), what); }
  void fail_here(std::string_view what) const {
    if (path_.empty()) {
      set_error(Error::invalid("body: " + std::string(what)));
    } else {
      fail_at(path_, what);
    }
  }

  std::string bytes(std::string_view field) const {
    const json::Value* v = find(field);
    if (!v) return {};
    std::optional<std::string> out;
    if (v->is_string()) out = base64_decode(v->get_string());
    if (!out) fail(field, "not valid base64");
    return out.value_or("");
  }

  int64_t int64(std::string_view field) const {
    const json::Value* v = find(field);
    if (!v) return 0;
    auto out = to_int64(*v);
    if (!out) fail(field, "expected an integer (a decimal string or a number)");
    return out.value_or(0);
  }

  bool boolean(std::string_view field) const {
    const json::Value* v = find(field);
    if (!v) return false;
    if (!v->is_bool()) fail(field, "expected true or false");
    return v->is_bool() && v->get_bool();
  }

  std::string string(std::string_view field) const {
    const json::Value* v = find(field);
    if (!v) return {};
    if (!v->is_string()) fail(field, "expected a string");
    return v->is_string() ? std::string(v->get_string()) : std::string();
  }

  // An enum by name or by number, as proto3 JSON allows; absent is the first value.
  template <size_t N>
  size_t enumeration(std::string_view field, const std::array<std::string_view, N>& names) const {
    const json::Value* v = find(field);
    if (!v) return 0;
    if (v->is_string()) {
      for (size_t i = 0; i < N; ++i) {
        if (names[i] == v->get_string()) return i;
      }
      fail(field, "unknown value '" + std::string(v->get_string()) + "'");
      return 0;
    }
    auto n = to_int64(*v);
    if (n && *n >= 0 && static_cast<size_t>(*n) < N) return static_cast<size_t>(*n);
    fail(field, "unknown value '" + json::serialize(*v) + "'");
    return 0;
  }

  Reader child(std::string_view field) const { return {find(field), name(field), error_}; }

  // Calls f(Reader) for each element of an array of objects.
  template <class F>
  void each(std::string_view field, F&& f) const {
    const json::Value* v = find(field);
    if (!v) return;
    if (!v->is_array()) return fail(field, "expected an array");
    const auto& a = v->get_array();
    for (size_t i = 0; i < a.size(); ++i) {
      f(Reader(&a[i], name(field) + "[" + std::to_string(i) + "]", error_));
    }
  }

  std::vector<std::string> bytes_list(std::string_view field) const {
    std::vector<std::string> out;
    const json::Value* v = find(field);
    if (!v) return out;
    if (!v->is_array()) {
      fail(field, "expected an array");
      return out;
    }
    const auto& a = v->get_array();
    for (size_t i = 0; i < a.size(); ++i) {
      std::optional<std::string> s;
      if (a[i].is_string()) s = base64_decode(a[i].get_string());
      if (!s) fail(std::string(field) + "[" + std::to_string(i) + "]", "not valid base64");
      out.push_back(s.value_or(""));
    }
    return out;
  }

 private:
  const json::Value* find(std::string_view field) const {
    if (!obj_) return nullptr;
    const json::Value* v = obj_->if_contains(field);
    return v && !v->is_null() ? v : nullptr;
  }
  std::string name(std::string_view field) const {
    return path_.empty() ? std::string(field) : path_ + "." + std::string(field);
  }
  void fail_at(const std::string& path, std::string_view what) const {
    set_error(Error::invalid("field '" + path + "': " + std::string(what)));
  }
  void set_error(Error e) const {
    if (!*error_) *error_ = std::move(e);
  }

  const json::Object* obj_ = nullptr;
  std::string path_;
  std::optional<Error>* error_;
};

// Runs read(Reader) over the root value and turns a recorded error into a failed Result.
template <class F>
auto read_root(const json::Value& v, F read) -> Result<decltype(read(std::declval<Reader>()))> {
  std::optional<Error> error;
  Reader root(&v, "", &error);
  if (!v.is_object()) root.fail_here("expected a JSON object");
  auto out = read(root);
  if (error) return *error;
  return out;
}

ResponseHeader read_header(const Reader& r) { return {r.int64("revision")}; }

KeyValue read_kv(const Reader& r) {
  KeyValue kv;
  kv.key = r.bytes("key");
  kv.create_revision = r.int64("create_revision");
  kv.mod_revision = r.int64("mod_revision");
  kv.version = r.int64("version");
  kv.value = r.bytes("value");
  kv.lease = r.int64("lease");
  return kv;
}

std::vector<KeyValue> read_kvs(const Reader& r, std::string_view field) {
  std::vector<KeyValue> out;
  r.each(field, [&](const Reader& e) { out.push_back(read_kv(e)); });
  return out;
}

RangeRequest read_range(const Reader& r) {
  RangeRequest out;
  out.key = r.bytes("key");
  out.range_end = r.bytes("range_end");
  out.limit = r.int64("limit");
  out.revision = r.int64("revision");
  out.keys_only = r.boolean("keys_only");
  out.count_only = r.boolean("count_only");
  return out;
}

PutRequest read_put(const Reader& r) {
  PutRequest out;
  out.key = r.bytes("key");
  out.value = r.bytes("value");
  out.lease = r.int64("lease");
  out.prev_kv = r.boolean("prev_kv");
  out.ignore_value = r.boolean("ignore_value");
  out.ignore_lease = r.boolean("ignore_lease");
  return out;
}

DeleteRangeRequest read_delete_range(const Reader& r) {
  DeleteRangeRequest out;
  out.key = r.bytes("key");
  out.range_end = r.bytes("range_end");
  out.prev_kv = r.boolean("prev_kv");
  return out;
}

Compare read_compare(const Reader& r) {
  Compare c;
  c.result = static_cast<Compare::Result>(r.enumeration("result", kCompareResults));
  auto target = r.enumeration("target", kCompareTargets);
  c.target = static_cast<Compare::Target>(target);
  c.key = r.bytes("key");
  c.range_end = r.bytes("range_end");
  if (c.target == Compare::Target::kValue) {
    c.value = r.bytes(kCompareUnion[target]);
  } else {
    c.number = r.int64(kCompareUnion[target]);
  }
  return c;
}

// A oneof wrapper ({"request_put": {...}}): exactly one of `names` must be set.
template <size_t N>
std::optional<size_t> read_oneof(const Reader& r, const std::array<std::string_view, N>& names) {
  std::optional<size_t> found;
  for (size_t i = 0; i < N; ++i) {
    if (!r.has(names[i])) continue;
    if (found) {
      r.fail_here("more than one of " + std::string(names[*found]) + " and " +
                  std::string(names[i]));
      return std::nullopt;
    }
    found = i;
  }
  if (!found) {
    std::string list;
    for (auto n : names) list += (list.empty() ? "" : ", ") + std::string(n);
    r.fail_here("expected one of " + list);
  }
  return found;
}

constexpr std::array<std::string_view, 3> kRequestOps = {"request_range", "request_put",
                                                         "request_delete_range"};
constexpr std::array<std::string_view, 3> kResponseOps = {"response_range", "response_put",
                                                          "response_delete_range"};

RequestOp read_request_op(const Reader& r) {
  if (r.has("request_txn")) {
    r.fail("request_txn", "nested transactions are not supported");
    return {};
  }
  auto which = read_oneof(r, kRequestOps);
  if (which == 1) return {read_put(r.child(kRequestOps[1]))};
  if (which == 2) return {read_delete_range(r.child(kRequestOps[2]))};
  if (which == 0) return {read_range(r.child(kRequestOps[0]))};
  return {};
}

std::vector<RequestOp> read_request_ops(const Reader& r, std::string_view field) {
  std::vector<RequestOp> out;
  r.each(field, [&](const Reader& e) { out.push_back(read_request_op(e)); });
  return out;
}

RangeResponse read_range_response(const Reader& r) {
  RangeResponse out;
  out.header = read_header(r.child("header"));
  out.kvs = read_kvs(r, "kvs");
  out.more = r.boolean("more");
  out.count = r.int64("count");
  return out;
}

PutResponse read_put_response(const Reader& r) {
  PutResponse out;
  out.header = read_header(r.child("header"));
  if (r.has("prev_kv")) out.prev_kv = read_kv(r.child("prev_kv"));
  return out;
}

DeleteRangeResponse read_delete_range_response(const Reader& r) {
  DeleteRangeResponse out;
  out.header = read_header(r.child("header"));
  out.deleted = r.int64("deleted");
  out.prev_kvs = read_kvs(r, "prev_kvs");
  return out;
}

ResponseOp read_response_op(const Reader& r) {
  auto which = read_oneof(r, kResponseOps);
  if (which == 1) return {read_put_response(r.child(kResponseOps[1]))};
  if (which == 2) return {read_delete_range_response(r.child(kResponseOps[2]))};
  return {read_range_response(r.child(kResponseOps[0]))};
}

Event read_event(const Reader& r) {
  Event e;
  e.type = static_cast<Event::Type>(r.enumeration("type", kEventTypes));
  e.kv = read_kv(r.child("kv"));
  if (r.has("prev_kv")) e.prev_kv = read_kv(r.child("prev_kv"));
  return e;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Requests.

Result<RangeRequest> parse_range(const json::Value& v) { return read_root(v, read_range); }
Result<PutRequest> parse_put(const json::Value& v) { return read_root(v, read_put); }
Result<DeleteRangeRequest> parse_delete_range(const json::Value& v) {
  return read_root(v, read_delete_range);
}

Result<TxnRequest> parse_txn(const json::Value& v) {
  return read_root(v, [](const Reader& r) {
    TxnRequest out;
    r.each("compare", [&](const Reader& e) { out.compare.push_back(read_compare(e)); });
    out.success = read_request_ops(r, "success");
    out.failure = read_request_ops(r, "failure");
    return out;
  });
}

Result<CompactionRequest> parse_compaction(const json::Value& v) {
  return read_root(v, [](const Reader& r) { return CompactionRequest{r.int64("revision")}; });
}

Result<LeaseGrantRequest> parse_lease_grant(const json::Value& v) {
  return read_root(v, [](const Reader& r) {
    return LeaseGrantRequest{r.int64("TTL"), r.int64("ID")};
  });
}

Result<int64_t> parse_lease_id(const json::Value& v) {
  return read_root(v, [](const Reader& r) { return r.int64("ID"); });
}

Result<std::pair<int64_t, bool>> parse_lease_time_to_live(const json::Value& v) {
  return read_root(v, [](const Reader& r) { return std::pair(r.int64("ID"), r.boolean("keys")); });
}

Result<WatchCreateRequest> parse_watch_create(const json::Value& v) {
  return read_root(v, [](const Reader& root) {
    WatchCreateRequest out;
    // Over HTTP a watch stream carries exactly one request: the create.
    if (!root.has("create_request")) {
      root.fail("create_request", "missing (only a create request starts a watch over HTTP)");
      return out;
    }
    Reader r = root.child("create_request");
    out.key = r.bytes("key");
    out.range_end = r.bytes("range_end");
    out.start_revision = r.int64("start_revision");
    out.progress_notify = r.boolean("progress_notify");
    out.prev_kv = r.boolean("prev_kv");
    return out;
  });
}

json::Value encode(const RangeRequest& r) {
  json::Object o;
  set_bytes(o, "key", r.key);
  set_bytes(o, "range_end", r.range_end);
  set_int(o, "limit", r.limit);
  set_int(o, "revision", r.revision);
  set_bool(o, "keys_only", r.keys_only);
  set_bool(o, "count_only", r.count_only);
  return o;
}

json::Value encode(const PutRequest& r) {
  json::Object o;
  set_bytes(o, "key", r.key);
  set_bytes(o, "value", r.value);
  set_int(o, "lease", r.lease);
  set_bool(o, "prev_kv", r.prev_kv);
  set_bool(o, "ignore_value", r.ignore_value);
  set_bool(o, "ignore_lease", r.ignore_lease);
  return o;
}

json::Value encode(const DeleteRangeRequest& r) {
  json::Object o;
  set_bytes(o, "key", r.key);
  set_bytes(o, "range_end", r.range_end);
  set_bool(o, "prev_kv", r.prev_kv);
  return o;
}

json::Value encode(const TxnRequest& r) {
  json::Object o;
  auto ops = [](const std::vector<RequestOp>& list) {
    json::Array a;
    for (const auto& op : list) a.push_back(write_request_op(op));
    return a;
  };
  if (!r.compare.empty()) {
    json::Array a;
    for (const auto& c : r.compare) a.push_back(write_compare(c));
    o["compare"] = std::move(a);
  }
  if (!r.success.empty()) o["success"] = ops(r.success);
  if (!r.failure.empty()) o["failure"] = ops(r.failure);
  return o;
}

json::Value encode(const CompactionRequest& r) {
  json::Object o;
  set_int(o, "revision", r.revision);
  return o;
}

json::Value encode(const LeaseGrantRequest& r) {
  json::Object o;
  set_int(o, "TTL", r.ttl);
  set_int(o, "ID", r.id);
  return o;
}

json::Value encode_lease_id(int64_t id) {
  json::Object o;
  set_int(o, "ID", id);
  return o;
}

json::Value encode_lease_time_to_live(int64_t id, bool keys) {
  json::Object o;
  set_int(o, "ID", id);
  set_bool(o, "keys", keys);
  return o;
}

json::Value encode_watch_create(const WatchCreateRequest& r) {
  json::Object o;
  set_bytes(o, "key", r.key);
  set_bytes(o, "range_end", r.range_end);
  set_int(o, "start_revision", r.start_revision);
  set_bool(o, "progress_notify", r.progress_notify);
  set_bool(o, "prev_kv", r.prev_kv);
  return json::Object{{"create_request", std::move(o)}};
}

// ---------------------------------------------------------------------------------------------
// Responses.

json::Value encode_header(const ResponseHeader& h) { return write_header(h); }

json::Value encode(const RangeResponse& r) {
  json::Object o{{"header", write_header(r.header)}};
  if (!r.kvs.empty()) o["kvs"] = write_kvs(r.kvs);
  set_bool(o, "more", r.more);
  set_int(o, "count", r.count);
  return o;
}

json::Value encode(const PutResponse& r) {
  json::Object o{{"header", write_header(r.header)}};
  if (r.prev_kv) o["prev_kv"] = write_kv(*r.prev_kv);
  return o;
}

json::Value encode(const DeleteRangeResponse& r) {
  json::Object o{{"header", write_header(r.header)}};
  set_int(o, "deleted", r.deleted);
  if (!r.prev_kvs.empty()) o["prev_kvs"] = write_kvs(r.prev_kvs);
  return o;
}

json::Value encode(const TxnResponse& r) {
  json::Object o{{"header", write_header(r.header)}};
  set_bool(o, "succeeded", r.succeeded);
  if (!r.responses.empty()) {
    json::Array a;
    for (const auto& op : r.responses) a.push_back(write_response_op(op));
    o["responses"] = std::move(a);
  }
  return o;
}

json::Value encode(const CompactionResponse& r) {
  return json::Object{{"header", write_header(r.header)}};
}

json::Value encode(const LeaseGrantResponse& r) {
  json::Object o{{"header", write_header(r.header)}};
  set_int(o, "ID", r.id);
  set_int(o, "TTL", r.ttl);
  return o;
}

json::Value encode(const LeaseKeepAliveResponse& r) {
  json::Object o{{"header", write_header(r.header)}};
  set_int(o, "ID", r.id);
  set_int(o, "TTL", r.ttl);
  return o;
}

json::Value encode(const LeaseTimeToLiveResponse& r) {
  json::Object o{{"header", write_header(r.header)}};
  set_int(o, "ID", r.id);
  set_int(o, "TTL", r.ttl);
  set_int(o, "grantedTTL", r.granted_ttl);
  if (!r.keys.empty()) {
    json::Array a;
    for (const auto& k : r.keys) a.push_back(json::Value(base64_encode(k)));
    o["keys"] = std::move(a);
  }
  return o;
}

Result<RangeResponse> parse_range_response(const json::Value& v) {
  return read_root(v, read_range_response);
}
Result<PutResponse> parse_put_response(const json::Value& v) {
  return read_root(v, read_put_response);
}
Result<DeleteRangeResponse> parse_delete_range_response(const json::Value& v) {
  return read_root(v, read_delete_range_response);
}

Result<TxnResponse> parse_txn_response(const json::Value& v) {
  return read_root(v, [](const Reader& r) {
    TxnResponse out;
    out.header = read_header(r.child("header"));
    out.succeeded = r.boolean("succeeded");
    r.each("responses", [&](const Reader& e) { out.responses.push_back(read_response_op(e)); });
    return out;
  });
}

Result<CompactionResponse> parse_compaction_response(const json::Value& v) {
  return read_root(
      v, [](const Reader& r) { return CompactionResponse{read_header(r.child("header"))}; });
}

Result<LeaseGrantResponse> parse_lease_grant_response(const json::Value& v) {
  return read_root(v, [](const Reader& r) {
    LeaseGrantResponse out{read_header(r.child("header")), r.int64("ID"), r.int64("TTL")};
    // etcd may report a grant failure in the body's own "error" field.
    if (auto e = r.string("error"); !e.empty()) r.fail("error", e);
    return out;
  });
}

Result<LeaseKeepAliveResponse> parse_lease_keepalive_response(const json::Value& v) {
  return read_root(v, [](const Reader& root) {
    // The gateway streams keep-alive answers, so each comes wrapped as {"result": {...}}.
    Reader r = root.has("result") ? root.child("result") : root;
    return LeaseKeepAliveResponse{read_header(r.child("header")), r.int64("ID"), r.int64("TTL")};
  });
}

Result<LeaseTimeToLiveResponse> parse_lease_time_to_live_response(const json::Value& v) {
  return read_root(v, [](const Reader& r) {
    LeaseTimeToLiveResponse out;
    out.header = read_header(r.child("header"));
    out.id = r.int64("ID");
    out.ttl = r.int64("TTL");  // absent means 0 (about to expire), not the struct's -1
    out.granted_ttl = r.int64("grantedTTL");
    out.keys = r.bytes_list("keys");
    return out;
  });
}

json::Value encode(const WatchMessage& m) {
  json::Object o{{"header", write_header(m.header)}};
  set_int(o, "watch_id", m.watch_id);
  set_bool(o, "created", m.created);
  set_bool(o, "canceled", m.canceled);
  set_int(o, "compact_revision", m.compact_revision);
  if (!m.cancel_reason.empty()) o["cancel_reason"] = m.cancel_reason;
  if (!m.events.empty()) {
    json::Array a;
    for (const auto& e : m.events) a.push_back(write_event(e));
    o["events"] = std::move(a);
  }
  return json::Object{{"result", std::move(o)}};
}

Result<WatchMessage> parse_watch_message(const json::Value& v) {
  return read_root(v, [](const Reader& root) {
    WatchMessage m;
    if (!root.has("result")) {
      root.fail("result", "missing");
      return m;
    }
    Reader r = root.child("result");
    m.header = read_header(r.child("header"));
    m.watch_id = r.int64("watch_id");
    m.created = r.boolean("created");
    m.canceled = r.boolean("canceled");
    m.compact_revision = r.int64("compact_revision");
    m.cancel_reason = r.string("cancel_reason");
    r.each("events", [&](const Reader& e) { m.events.push_back(read_event(e)); });
    return m;
  });
}

// ---------------------------------------------------------------------------------------------
// Errors.

json::Value encode(const EtcdError& e) {
  // The field order etcd's gateway writes.
  return json::Object{{"error", e.message}, {"message", e.message}, {"code", e.grpc_code}};
}

std::optional<EtcdError> parse_error(const json::Value& v) {
  const json::Object* o = v.if_object();
  if (!o) return std::nullopt;
  // A failure in the middle of a stream comes as {"error": {"grpc_code": N, "message": "..."}}.
  const json::Value* inner = o->if_contains("error");
  if (inner && inner->is_object()) o = &inner->get_object();
  const json::Value* code = o->if_contains("code");
  if (!code) code = o->if_contains("grpc_code");
  const json::Value* message = o->if_contains("message");
  if (!message || !message->is_string() || message->get_string().empty()) {
    message = o->if_contains("error");
  }
  if (!code || !message || !message->is_string()) return std::nullopt;
  auto n = to_int64(*code);
  // {"error": "not_found", "message": ...} without a gRPC code is qufop's own error, not etcd's.
  if (!n || *n < 0 || *n > 16) return std::nullopt;
  return EtcdError{static_cast<int>(*n), std::string(message->get_string())};
}

}  // namespace qufop::keeper::codec
