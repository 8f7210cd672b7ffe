#include "keeper/client.h"

#include <atomic>
#include <boost/json/stream_parser.hpp>
#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "common/http_client.h"
#include "common/json.h"
#include "keeper/codec.h"

namespace qufop::keeper {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::string_view kEtcdCode = "etcd";
// The gRPC code etcd's gateway gives a watch that the server canceled for another reason.
constexpr int kGrpcUnknown = 2;
// Idle connections kept per endpoint; more concurrent callers open (and drop) extra ones.
constexpr size_t kMaxIdlePerEndpoint = 8;

Error etcd_error(const EtcdError& e) { return {std::string(kEtcdCode), e.message, e.grpc_code}; }

// http::Client reports failures before anything was written as "connect HOST:PORT: ..." or
// "resolve HOST: ..." (common/http_client.cc); only those prove a write was not sent.
bool failed_before_sending(const Error& e) {
  return e.message.starts_with("connect ") || e.message.starts_with("resolve ");
}

bool is_transport_error(const Error& e) { return e.code == "unavailable" || e.code == "timeout"; }

// May this failure be retried on the next endpoint? Reads may always move on; a write only when
// it provably never left this process (`unsent`), so it cannot be applied twice.
bool may_fail_over(const Error& e, bool idempotent, bool unsent) {
  if (is_transport_error(e)) return idempotent || unsent;
  // "etcdserver: no leader" and the like: that member cannot serve now, another may.
  return idempotent && e.code == kEtcdCode && e.sys_errno == kGrpcUnavailable;
}

bool is_read_only(const TxnRequest& t) {
  auto reads = [](const std::vector<RequestOp>& ops) {
    for (const auto& op : ops) {
      if (!std::holds_alternative<RangeRequest>(op.request)) return false;
    }
    return true;
  };
  return reads(t.success) && reads(t.failure);
}

std::string snippet(std::string_view body) {
  constexpr size_t kMax = 200;
  return std::string(body.substr(0, kMax)) + (body.size() > kMax ? "..." : "");
}

// Turns an HTTP answer into the JSON value of a success, an etcd error, or a protocol error.
Result<json::Value> decode_answer(const http::Response& res, std::string_view where) {
  auto body = json::parse(res.body);
  if (body) {
    // Errors of the gateway's streaming calls (keepalive) arrive with status 200, in the body.
    bool has_error = body->is_object() && body->get_object().contains("error");
    if (res.status != 200 || has_error) {
      if (auto e = codec::parse_error(*body)) return etcd_error(*e);
    }
    if (res.status == 200) return std::move(*body);
  }
  std::string what = std::string(where) + ": HTTP " + std::to_string(res.status) + ": ";
  if (res.status == 200) return Error::io(what + body.error().message);
  // A proxy's 502/503 is the endpoint being unreachable; anything else is not an etcd.
  std::string code = res.status >= 502 && res.status <= 504 ? "unavailable" : "io";
  return Error{code, what + snippet(res.body), 0};
}

// Splits a watch stream into its JSON messages (newline-delimited by etcd, but any framing of
// concatenated objects is accepted, split across chunks or several to a chunk) and hands event
// batches on. Tracks the revision to resume from.
class WatchDecoder {
 public:
  using OnEvents = std::function<bool(const std::vector<Event>&, int64_t)>;
  WatchDecoder(const OnEvents& on_events, int64_t next_revision)
      : on_events_(on_events), next_revision_(next_revision) {}

  // Returns false once the stream should end (stopped by the callback, or an error).
  bool feed(std::string_view data) {
    if (head_.size() < kHeadBytes) head_ += data.substr(0, kHeadBytes - head_.size());
    while (!data.empty() && !done()) {
      if (!mid_message_) {
        size_t skip = data.find_first_not_of(" \t\r\n");
        if (skip == std::string_view::npos) return true;
        data.remove_prefix(skip);
      }
      boost::system::error_code ec;
      size_t used = parser_.write_some(data.data(), data.size(), ec);
      if (ec) {
        error_ = Error::io("malformed watch stream: " + ec.message());
        return false;
      }
      data.remove_prefix(used);
      mid_message_ = !parser_.done();
      if (!mid_message_) {
        json::Value v = parser_.release();
        parser_.reset();
        handle(v);
      }
    }
    return !done();
  }

  bool done() const { return stopped_ || error_.has_value(); }
  bool stopped() const { return stopped_; }
  const std::optional<Error>& error() const { return error_; }
  bool got_message() const { return messages_ > 0; }
  // When the last message other than the "created" answer arrived, if any.
  int64_t next_revision() const { return next_revision_; }
  // The stream's first bytes, to show what a server that is not an etcd answered.
  const std::string& head() const { return head_; }

 private:
  static constexpr size_t kHeadBytes = 200;

  void handle(const json::Value& v) {
    ++messages_;
    if (auto e = codec::parse_error(v)) {
      error_ = etcd_error(*e);
      return;
    }
    auto m = codec::parse_watch_message(v);
    if (!m) {
      error_ = m.error().wrap("malformed watch message");
      return;
    }
    if (m->canceled) return cancel(*m);
    if (m->created && next_revision_ == 0) next_revision_ = m->header.revision + 1;
    if (m->events.empty()) {
      // A progress notification: every event up to the header's revision has been sent.
      if (!m->created) next_revision_ = std::max(next_revision_, m->header.revision + 1);
      return;
    }
    // During catch-up the header's revision runs ahead of the events still to come, so the
    // batch's own last revision is the one it is safe to resume after.
    int64_t last = m->events.back().kv.mod_revision;
    next_revision_ = last + 1;
    if (!on_events_(m->events, last)) stopped_ = true;
  }

  void cancel(const codec::WatchMessage& m) {
    // etcd 3.4 cancels a watch on a compacted revision with compact_revision set and no reason.
    if (m.compact_revision > 0) {
      error_ = Error{std::string(kEtcdCode), kErrCompacted, kGrpcOutOfRange};
    } else {
      std::string reason =
          m.cancel_reason.empty() ? "watch canceled by the server" : m.cancel_reason;
      error_ = Error{std::string(kEtcdCode), reason, kGrpcUnknown};
    }
  }

  const OnEvents& on_events_;
  boost::json::stream_parser parser_;
  bool mid_message_ = false;
  bool stopped_ = false;
  std::optional<Error> error_;
  int messages_ = 0;
  int64_t next_revision_ = 0;
  std::string head_;
};

// Sends keep-alives from its own thread until destroyed.
class KeepAliveLoop final : public Client::KeepAlive {
 public:
  using Send = std::function<Result<LeaseKeepAliveResponse>()>;
  KeepAliveLoop(Send send, int64_t ttl_seconds, std::function<void()> on_lost)
      : send_(std::move(send)),
        ttl_(std::chrono::seconds(ttl_seconds)),
        on_lost_(std::move(on_lost)) {
    thread_ = std::thread([this] { run(); });
  }
  ~KeepAliveLoop() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  void run() {
    auto interval = std::max<Clock::duration>(ttl_ / 3, std::chrono::milliseconds(100));
    auto renewed = Clock::now();
    while (sleep(interval)) {
      auto r = send_();
      if (r && r->ttl > 0) {
        renewed = Clock::now();
        continue;
      }
      // ttl <= 0 or "not found": etcd no longer has it. Unreachable for a whole TTL: it has
      // expired by now as far as anyone else can tell.
      bool gone = r.ok() || is_etcd_error(r.error(), kErrLeaseNotFound);
      if (gone || Clock::now() - renewed >= ttl_) {
        if (on_lost_) on_lost_();
        return;
      }
    }
  }

  // Waits for `d`; false when the handle is being destroyed.
  bool sleep(Clock::duration d) {
    std::unique_lock lock(mu_);
    return !cv_.wait_for(lock, d, [this] { return stop_; });
  }

  Send send_;
  Clock::duration ttl_;
  std::function<void()> on_lost_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

Result<HostPort> parse_endpoint(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return Error::invalid("keeper endpoint '" + std::string(text) + "': " + std::string(why));
  };
  if (text.starts_with("https://")) {
    return bad("https is not supported yet; use http:// (put TLS in front of keeper on a proxy)");
  }
  if (!text.starts_with("http://")) return bad("expected http://HOST:PORT");
  std::string_view rest = text.substr(7);
  if (rest.ends_with('/')) rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos) return bad("a path is not allowed");
  if (rest.empty() || rest.front() == ':') return bad("no host given");
  auto hp = parse_host_port(rest, /*allow_zero=*/false);
  if (!hp) return hp.error().wrap("keeper endpoint '" + std::string(text) + "'");
  return hp;
}

}  // namespace

Result<std::vector<HostPort>> parse_endpoints(std::string_view all) {
  std::vector<HostPort> out;
  std::string_view text = all;
  while (true) {
    size_t comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item.empty()) {
      return Error::invalid("keeper endpoints '" + std::string(all) +
                            "': empty entry (expected http://HOST:PORT[,http://HOST:PORT...])");
    }
    auto hp = parse_endpoint(item);
    if (!hp) return hp.error();
    out.push_back(std::move(*hp));
    if (comma == std::string_view::npos) return out;
    text = text.substr(comma + 1);
  }
}

bool is_etcd_error(const Error& e, std::string_view etcd_message) {
  if (e.code != kEtcdCode) return false;
  // Callers may have added context with wrap(): "loading nodes: etcdserver: ...".
  std::string_view m = e.message;
  return m == etcd_message ||
         (m.ends_with(etcd_message) && m.substr(0, m.size() - etcd_message.size()).ends_with(": "));
}

struct Client::Impl {
  Impl(std::vector<HostPort> eps, ClientOptions o)
      : endpoints(std::move(eps)), options(o), idle(endpoints.size()) {}

  http::ClientOptions http_options() const {
    http::ClientOptions o;
    o.connect_timeout = options.connect_timeout;
    o.request_timeout = options.request_timeout;
    return o;
  }

  // A connection to endpoint i from the pool (reused = true), or a new one.
  std::pair<std::unique_ptr<http::Client>, bool> acquire(size_t i) {
    {
      std::lock_guard lock(mu);
      if (!idle[i].empty()) {
        auto c = std::move(idle[i].back());
        idle[i].pop_back();
        return {std::move(c), true};
      }
    }
    return {std::make_unique<http::Client>(endpoints[i].host, endpoints[i].port, http_options()),
            false};
  }

  // After a transport failure the endpoint's other pooled connections are likely dead too.
  void drop_idle(size_t i) {
    std::lock_guard lock(mu);
    idle[i].clear();
  }

  void release(size_t i, std::unique_ptr<http::Client> c) {
    std::lock_guard lock(mu);
    if (idle[i].size() < kMaxIdlePerEndpoint) idle[i].push_back(std::move(c));
  }

  // One POST to endpoint i. `unsent` tells whether a failure provably came before the request
  // was written. On a pooled connection it never does: http::Client retries a failure there on
  // a fresh connection, so a final "connect" error does not prove the first try sent nothing.
  Result<json::Value> call_one(size_t i, const std::string& path, const std::string& body,
                               bool* unsent) {
    auto [client, reused] = acquire(i);
    auto res = client->post(path, body);
    if (!res) {
      *unsent = !reused && failed_before_sending(res.error());
      if (is_transport_error(res.error())) drop_idle(i);
      return res.error();
    }
    release(i, std::move(client));
    return decode_answer(*res, "POST " + path + " to " + endpoints[i].str());
  }

  // POSTs to the preferred endpoint, moving on to the next ones as may_fail_over allows.
  Result<json::Value> call(const std::string& path, const json::Value& request, bool idempotent) {
    std::string body = json::serialize(request);
    size_t start = preferred.load();
    std::string tried;
    for (size_t n = 0; n < endpoints.size(); ++n) {
      size_t i = (start + n) % endpoints.size();
      bool unsent = false;
      auto r = call_one(i, path, body, &unsent);
      if (r) {
        preferred = i;
        return r;
      }
      if (!may_fail_over(r.error(), idempotent, unsent) || n + 1 == endpoints.size()) {
        Error e = r.error();
        if (!tried.empty()) e.message = tried + "; then " + e.message;
        return e;
      }
      tried += (tried.empty() ? "" : "; ") + r.error().message;
    }
    return Error::invalid("no keeper endpoint configured");
  }

  template <class Response>
  Result<Response> rpc(const std::string& path, const json::Value& request, bool idempotent,
                       Result<Response> (*parse)(const json::Value&)) {
    auto v = call(path, request, idempotent);
    if (!v) return v.error();
    auto out = parse(*v);
    if (!out) return Error::io("answer to POST " + path + ": " + out.error().message);
    return out;
  }

  // One watch stream on the endpoints in turn, until one of them answers.
  Result<int> stream_watch(const WatchCreateRequest& r, WatchDecoder& decoder,
                           std::chrono::milliseconds timeout, http::StreamCancel* cancel) {
    http::Request req;
    req.method = "POST";
    req.target = "/v3/watch";
    req.headers.emplace_back("Content-Type", "application/json");
    req.body = json::serialize(codec::encode_watch_create(r));
    size_t start = preferred.load();
    Result<int> res = Error::invalid("no keeper endpoint configured");
    for (size_t n = 0; n < endpoints.size(); ++n) {
      size_t i = (start + n) % endpoints.size();
      http::Client client(endpoints[i].host, endpoints[i].port, http_options());
      res = client.stream(
          req, [&](std::string_view d) { return decoder.feed(d); }, timeout, cancel);
      if (res && *res != 200) return not_a_watch(*res, endpoints[i], decoder);
      // A watch is a read: moving on is safe as long as nothing was delivered from this one.
      if (res || decoder.got_message() || !is_transport_error(res.error())) break;
    }
    return res;
  }

  // A non-200 answer to a watch: etcd's error body (which the decoder holds), or something
  // that is not an etcd at all.
  static Error not_a_watch(int status, const HostPort& endpoint, const WatchDecoder& decoder) {
    if (decoder.error() && decoder.error()->code == kEtcdCode) return *decoder.error();
    std::string code = status >= 502 && status <= 504 ? "unavailable" : "io";
    return {code,
            "POST /v3/watch to " + endpoint.str() + ": HTTP " + std::to_string(status) + ": " +
                snippet(decoder.head()),
            0};
  }

  std::vector<HostPort> endpoints;
  ClientOptions options;
  std::mutex mu;
  std::vector<std::vector<std::unique_ptr<http::Client>>> idle;
  std::atomic<size_t> preferred{0};  // the endpoint that answered last
};

WatchCancel::WatchCancel() : stream_(std::make_unique<http::StreamCancel>()) {}
WatchCancel::~WatchCancel() = default;
void WatchCancel::cancel() { stream_->cancel(); }
bool WatchCancel::cancelled() const { return stream_->cancelled(); }

Client::Client(std::vector<HostPort> endpoints, ClientOptions options)
    : impl_(std::make_shared<Impl>(std::move(endpoints), options)) {}

Client::~Client() = default;

const std::vector<HostPort>& Client::endpoints() const { return impl_->endpoints; }

Result<RangeResponse> Client::range(const RangeRequest& r) {
  return impl_->rpc("/v3/kv/range", codec::encode(r), true, codec::parse_range_response);
}

Result<PutResponse> Client::put(const PutRequest& r) {
  return impl_->rpc("/v3/kv/put", codec::encode(r), false, codec::parse_put_response);
}

Result<DeleteRangeResponse> Client::delete_range(const DeleteRangeRequest& r) {
  return impl_->rpc("/v3/kv/deleterange", codec::encode(r), false,
                    codec::parse_delete_range_response);
}

Result<TxnResponse> Client::txn(const TxnRequest& r) {
  return impl_->rpc("/v3/kv/txn", codec::encode(r), is_read_only(r), codec::parse_txn_response);
}

Result<CompactionResponse> Client::compact(int64_t revision) {
  return impl_->rpc("/v3/kv/compaction", codec::encode(CompactionRequest{revision}), false,
                    codec::parse_compaction_response);
}

Result<std::optional<KeyValue>> Client::get(std::string_view key) {
  RangeRequest r;
  r.key = key;
  auto res = range(r);
  if (!res) return res.error();
  if (res->kvs.empty()) return std::optional<KeyValue>();
  return std::optional<KeyValue>(std::move(res->kvs.front()));
}

Result<int64_t> Client::put(std::string_view key, std::string_view value, int64_t lease) {
  PutRequest r;
  r.key = key;
  r.value = value;
  r.lease = lease;
  auto res = put(r);
  if (!res) return res.error();
  return res->header.revision;
}

Result<LeaseGrantResponse> Client::lease_grant(int64_t ttl_seconds, int64_t id) {
  return impl_->rpc("/v3/lease/grant", codec::encode(LeaseGrantRequest{ttl_seconds, id}), false,
                    codec::parse_lease_grant_response);
}

Result<void> Client::lease_revoke(int64_t id) {
  auto res = impl_->rpc("/v3/lease/revoke", codec::encode_lease_id(id), false,
                        codec::parse_compaction_response);  // a bare header, like compaction's
  if (!res) return res.error();
  return ok();
}

Result<LeaseKeepAliveResponse> Client::lease_keepalive(int64_t id) {
  return impl_->rpc("/v3/lease/keepalive", codec::encode_lease_id(id), true,
                    codec::parse_lease_keepalive_response);
}

Result<LeaseTimeToLiveResponse> Client::lease_time_to_live(int64_t id, bool keys) {
  return impl_->rpc("/v3/lease/timetolive", codec::encode_lease_time_to_live(id, keys), true,
                    codec::parse_lease_time_to_live_response);
}

Result<void> Client::watch(
    const WatchCreateRequest& r,
    const std::function<bool(const std::vector<Event>&, int64_t revision)>& on_events,
    std::chrono::milliseconds idle_timeout, WatchCancel* cancel) {
  // http::Client::stream's timeout bounds silence, which is exactly idle_timeout.
  WatchDecoder decoder(on_events, r.start_revision);
  auto res =
      impl_->stream_watch(r, decoder, idle_timeout, cancel ? cancel->stream_.get() : nullptr);
  if (decoder.stopped()) return ok();
  if (cancel && cancel->cancelled()) {
    return Error{"cancelled", "keeper watch of " + r.key + ": cancelled", ECANCELED};
  }
  if (!res) return res.error();
  if (decoder.error()) return *decoder.error();
  return Error{"unavailable",
               "watch stream ended by the server (HTTP " + std::to_string(*res) + ")", 0};
}

std::unique_ptr<Client::KeepAlive> Client::keep_alive(int64_t lease_id, int64_t ttl_seconds,
                                                      std::function<void()> on_lost) {
  // The loop holds the connection pool, so it may outlive this Client.
  auto send = [impl = impl_, lease_id]() {
    return impl->rpc("/v3/lease/keepalive", codec::encode_lease_id(lease_id), true,
                     codec::parse_lease_keepalive_response);
  };
  return std::make_unique<KeepAliveLoop>(send, ttl_seconds, std::move(on_lost));
}

}  // namespace qufop::keeper
