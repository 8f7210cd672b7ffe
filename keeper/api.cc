#include "keeper/api.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <functional>
#include <list>
#include <mutex>

#include "common/http_server.h"
#include "common/json.h"
#include "common/metrics.h"
#include "keeper/codec.h"
#include "keeper/store.h"

namespace qufop::keeper {

namespace net = boost::asio;
using std::chrono::steady_clock;

namespace {

// grpc-gateway's mapping of gRPC codes to HTTP statuses.
int http_status(int grpc_code) {
  switch (grpc_code) {
    case kGrpcNotFound:
      return 404;
    case kGrpcUnavailable:
      return 503;
    case 0:
      return 200;
    default:
      return 400;
  }
}

http::Response etcd_error(const EtcdError& e) {
  return {http_status(e.grpc_code), "application/json", {}, json::serialize(codec::encode(e))};
}

http::Response ok_json(const json::Value& v) {
  return {200, "application/json", {}, json::serialize(v)};
}

// A parse failure in the gateway form: etcd answers InvalidArgument with the reason.
http::Response bad_request(const Error& e) { return etcd_error({kGrpcInvalidArgument, e.message}); }

template <class T>
http::Response answer(StoreResult<T> r, json::Value (*encode)(const T&)) {
  if (auto* err = std::get_if<StoreError>(&r)) return etcd_error(*err);
  return ok_json(encode(std::get<T>(r)));
}

// A store completion that answers the request: it runs on the store's writer thread, and
// Responder::send hands the response to the connection's own executor.
template <class T>
Store::Done<T> reply(http::Responder res, json::Value (*encode)(const T&)) {
  // shared_ptr: std::function needs a copyable callable, and a Responder is move-only.
  return [res = std::make_shared<http::Responder>(std::move(res)), encode](StoreResult<T> r) {
    res->send(answer<T>(std::move(r), encode));
  };
}

json::Value encode_revoke(const ResponseHeader& h) {
  return json::Object{{"header", codec::encode_header(h)}};
}

}  // namespace

// One open watch stream: the store's watch plus the HTTP stream it feeds.
struct WatchStream {
  WatchStream(http::Responder r, bool progress)
      : responder(std::move(r)), progress_notify(progress) {}
  std::mutex mu;
  http::Responder responder;
  bool progress_notify;
  std::unique_ptr<Watch> watch;  // last member: destroyed first, before what its callbacks use
  std::atomic<bool> ended{false};
  steady_clock::time_point last_sent = steady_clock::now();

  void send(const codec::WatchMessage& m) {
    std::lock_guard lock(mu);
    if (ended) return;
    responder.write(json::serialize(codec::encode(m)) + "\n");
    last_sent = steady_clock::now();
  }
  void end() {
    std::lock_guard lock(mu);
    if (ended.exchange(true)) return;
    responder.finish();
  }
};

struct Api::Impl {
  // A handler gets the parsed body on the io thread and answers through the Responder, inline
  // (reads: WAL readers never wait for the writer's fsync) or from a store completion (writes).
  using Handler = std::function<void(const json::Value&, http::Responder)>;

  Impl(net::io_context& io, Store& s, Metrics& m, ApiOptions o)
      : store(s), metrics(m), options(o), background(1), lease_timer(io), watch_timer(io) {}

  void register_routes(http::Server& server);
  void register_lease_routes(http::Server& server);
  void route(http::Server& server, const char* path, Handler fn);
  void keepalive(int64_t id, http::Responder res);
  void start_watch(const json::Value& body, http::Responder res);
  void tick_leases();
  void tick_watches();

  Store& store;
  Metrics& metrics;
  ApiOptions options;
  // The only blocking work left: lease expiry (a blocking write) and destroying watches
  // (which waits out their callbacks); neither may hold up the io threads.
  net::thread_pool background;
  net::steady_timer lease_timer;
  net::steady_timer watch_timer;
  std::atomic<bool> stopped{false};
  std::mutex watches_mu;
  std::list<std::shared_ptr<WatchStream>> watches;
};

void Api::Impl::route(http::Server& server, const char* path, Handler fn) {
  server.route_async("POST", path, [fn = std::move(fn)](http::Request req, http::Responder res) {
    auto parsed =
        json::parse(req.body.empty() ? std::string_view("{}") : std::string_view(req.body));
    if (!parsed) return res.send(bad_request(parsed.error()));
    fn(*parsed, std::move(res));
  });
}

void Api::Impl::register_routes(http::Server& server) {
  route(server, "/v3/kv/range", [this](const json::Value& v, http::Responder res) {
    auto r = codec::parse_range(v);
    res.send(r ? answer<RangeResponse>(store.range(*r), codec::encode) : bad_request(r.error()));
  });
  route(server, "/v3/kv/put", [this](const json::Value& v, http::Responder res) {
    auto r = codec::parse_put(v);
    if (!r) return res.send(bad_request(r.error()));
    store.put_async(std::move(*r), reply<PutResponse>(std::move(res), codec::encode));
  });
  route(server, "/v3/kv/deleterange", [this](const json::Value& v, http::Responder res) {
    auto r = codec::parse_delete_range(v);
    if (!r) return res.send(bad_request(r.error()));
    store.delete_range_async(std::move(*r),
                             reply<DeleteRangeResponse>(std::move(res), codec::encode));
  });
  route(server, "/v3/kv/txn", [this](const json::Value& v, http::Responder res) {
    auto r = codec::parse_txn(v);
    if (!r) return res.send(bad_request(r.error()));
    store.txn_async(std::move(*r), reply<TxnResponse>(std::move(res), codec::encode));
  });
  route(server, "/v3/kv/compaction", [this](const json::Value& v, http::Responder res) {
    auto r = codec::parse_compaction(v);
    if (!r) return res.send(bad_request(r.error()));
    store.compact_async(std::move(*r), reply<CompactionResponse>(std::move(res), codec::encode));
  });
  register_lease_routes(server);
  server.route_async("POST", "/v3/watch", [this](http::Request req, http::Responder res) {
    auto parsed = json::parse(req.body);
    if (!parsed) return res.send(bad_request(parsed.error()));
    start_watch(*parsed, std::move(res));
  });
}

void Api::Impl::register_lease_routes(http::Server& server) {
  route(server, "/v3/lease/grant", [this](const json::Value& v, http::Responder res) {
    auto r = codec::parse_lease_grant(v);
    if (!r) return res.send(bad_request(r.error()));
    store.lease_grant_async(std::move(*r),
                            reply<LeaseGrantResponse>(std::move(res), codec::encode));
  });
  route(server, "/v3/lease/revoke", [this](const json::Value& v, http::Responder res) {
    auto id = codec::parse_lease_id(v);
    if (!id) return res.send(bad_request(id.error()));
    store.lease_revoke_async(*id, reply<ResponseHeader>(std::move(res), encode_revoke));
  });
  route(server, "/v3/lease/keepalive", [this](const json::Value& v, http::Responder res) {
    auto id = codec::parse_lease_id(v);
    if (!id) return res.send(bad_request(id.error()));
    keepalive(*id, std::move(res));
  });
  auto ttl = [this](const json::Value& v, http::Responder res) {
    auto r = codec::parse_lease_time_to_live(v);
    res.send(r ? answer<LeaseTimeToLiveResponse>(store.lease_time_to_live(r->first, r->second),
                                                 codec::encode)
               : bad_request(r.error()));
  };
  route(server, "/v3/lease/timetolive", ttl);
  route(server, "/v3/kv/lease/timetolive", ttl);  // etcd serves both paths
}

void Api::Impl::keepalive(int64_t id, http::Responder res) {
  auto shared = std::make_shared<http::Responder>(std::move(res));
  // The store, not `this`: the completion may run on the writer thread after the Api is gone.
  Store* st = &store;
  store.lease_keepalive_async(id, [st, id, shared](StoreResult<LeaseKeepAliveResponse> r) {
    if (auto* err = std::get_if<StoreError>(&r)) {
      if (err->grpc_code != kGrpcNotFound) return shared->send(etcd_error(*err));
      // etcd's keep-alive stream answers an unknown lease with TTL 0, not an error.
      LeaseKeepAliveResponse gone;
      gone.header.revision = st->revision();
      gone.id = id;
      r = gone;
    }
    // The gateway streams keep-alive responses, so each one is wrapped in "result".
    shared->send(
        ok_json(json::Object{{"result", codec::encode(std::get<LeaseKeepAliveResponse>(r))}}));
  });
}

void Api::Impl::start_watch(const json::Value& body, http::Responder res) {
  auto create = codec::parse_watch_create(body);
  if (!create) return res.send(bad_request(create.error()));
  res.start_stream(200, "application/json");
  auto stream = std::make_shared<WatchStream>(std::move(res), create->progress_notify);
  // One watch per stream, so its id is 0 as etcd numbers a stream's first watch.
  const int64_t id = 0;
  codec::WatchMessage created;
  created.header.revision = store.revision();
  created.watch_id = id;
  created.created = true;
  stream->send(created);
  // The stream owns the store's Watch, whose destructor waits out its callbacks, so a raw
  // pointer in them never dangles.
  WatchStream* s = stream.get();
  WatchCallbacks callbacks;
  callbacks.on_events = [s, id](const std::vector<Event>& events, int64_t revision) {
    codec::WatchMessage m;
    m.header.revision = revision;
    m.watch_id = id;
    m.events = events;
    s->send(m);
  };
  callbacks.on_compacted = [s, id, this](int64_t compact_revision) {
    codec::WatchMessage m;
    m.header.revision = store.revision();
    m.watch_id = id;
    m.canceled = true;
    m.compact_revision = compact_revision;
    // As etcd: the cancel carries compact_revision and the stream stays open until the client
    // closes it.
    s->send(m);
  };
  auto w = store.watch(*create, std::move(callbacks));
  if (auto* err = std::get_if<StoreError>(&w)) {
    codec::WatchMessage m;
    m.header.revision = store.revision();
    m.watch_id = id;
    m.canceled = true;
    m.cancel_reason = err->message;
    stream->send(m);
    return stream->end();
  }
  {
    std::lock_guard slock(stream->mu);
    stream->watch = std::move(std::get<std::unique_ptr<Watch>>(w));
  }
  std::lock_guard lock(watches_mu);
  watches.push_back(std::move(stream));
}

void Api::Impl::tick_leases() {
  if (stopped) return;
  net::post(background, [this] { store.expire_leases(); });
  lease_timer.expires_after(std::chrono::milliseconds(500));
  lease_timer.async_wait([this](boost::system::error_code ec) {
    if (!ec) tick_leases();
  });
}

// Drops streams whose client went away and sends progress notifications where asked.
void Api::Impl::tick_watches() {
  if (stopped) return;
  std::vector<std::shared_ptr<WatchStream>> gone;
  {
    std::lock_guard lock(watches_mu);
    for (auto it = watches.begin(); it != watches.end();) {
      auto& s = *it;
      if (s->responder.closed() || s->ended) {
        gone.push_back(s);
        it = watches.erase(it);
        continue;
      }
      if (s->progress_notify && steady_clock::now() - s->last_sent >
                                    std::chrono::milliseconds(options.progress_interval_ms)) {
        codec::WatchMessage m;
        m.header.revision = store.revision();
        s->send(m);
      }
      ++it;
    }
  }
  // Destroying a Watch waits for its callbacks, so do it outside watches_mu and off the loop.
  if (!gone.empty()) net::post(background, [gone = std::move(gone)] {});
  watch_timer.expires_after(std::chrono::milliseconds(250));
  watch_timer.async_wait([this](boost::system::error_code ec) {
    if (!ec) tick_watches();
  });
}

Api::Api(net::io_context& io, http::Server& server, Store& store, Metrics& metrics,
         ApiOptions options)
    : impl_(std::make_shared<Impl>(io, store, metrics, options)) {
  impl_->register_routes(server);
  metrics.describe("qufop_keeper_revision", Metrics::Type::kGauge, "The store's revision.");
  metrics.set_callback("qufop_keeper_revision", "",
                       [&store] { return static_cast<double>(store.revision()); });
  metrics.describe("qufop_keeper_watch_streams", Metrics::Type::kGauge, "Open watch streams.");
  metrics.set_callback("qufop_keeper_watch_streams", "", [impl = impl_.get()] {
    std::lock_guard lock(impl->watches_mu);
    return static_cast<double>(impl->watches.size());
  });
  impl_->tick_leases();
  impl_->tick_watches();
}

void Api::shutdown() {
  if (impl_->stopped.exchange(true)) return;
  impl_->lease_timer.cancel();
  impl_->watch_timer.cancel();
  std::list<std::shared_ptr<WatchStream>> streams;
  {
    std::lock_guard lock(impl_->watches_mu);
    streams.swap(impl_->watches);
  }
  for (auto& s : streams) s->end();
  net::post(impl_->background, [streams = std::move(streams)] {});
}

Api::~Api() {
  shutdown();
  impl_->background.join();
}

}  // namespace qufop::keeper
