// The one keeper client every daemon uses: etcd v3's JSON gateway over HTTP/1.1 keep-alive,
// against qufop-keeper by default or a real etcd cluster for HA (--keeper URL[,URL...]).
// Failover: a request that could not reach an endpoint moves to the next one; a write is
// retried elsewhere only when it provably was not sent. Thread-safe (a connection per thread).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "common/config.h"
#include "common/result.h"
#include "keeper/types.h"

namespace qufop::http {
class StreamCancel;
}

namespace qufop::keeper {

struct ClientOptions {
  std::chrono::milliseconds connect_timeout{2'000};
  std::chrono::milliseconds request_timeout{10'000};
};

// "http://127.0.0.1:7100,http://10.0.0.2:2379" -> endpoints. Errors name the bad one.
Result<std::vector<HostPort>> parse_endpoints(std::string_view text);

// A call fails with a transport Error (code "unavailable"/"timeout"/"io"), or the server's
// etcd error, which comes back as Error{code "etcd", message = etcd's message, sys_errno = gRPC
// code}; is_etcd_error(err, kErrCompacted) tells them apart.
bool is_etcd_error(const Error& e, std::string_view etcd_message);

// Ends a Client::watch() from another thread, promptly: cancel() shuts the watch's connection
// down and watch() returns Error{"cancelled"}. It stays cancelled: a watch started after
// cancel() returns that at once; a cancel() after the watch ended does nothing. cancel() and
// cancelled() are thread-safe; one WatchCancel may serve several watches in turn (never two at
// once) and must outlive the watch() calls given it.
class WatchCancel {
 public:
  WatchCancel();
  ~WatchCancel();
  WatchCancel(const WatchCancel&) = delete;
  WatchCancel& operator=(const WatchCancel&) = delete;
  void cancel();
  bool cancelled() const;

 private:
  friend class Client;
  std::unique_ptr<http::StreamCancel> stream_;
};

class Client {
 public:
  Client(std::vector<HostPort> endpoints, ClientOptions options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  Result<RangeResponse> range(const RangeRequest& r);
  Result<PutResponse> put(const PutRequest& r);
  Result<DeleteRangeResponse> delete_range(const DeleteRangeRequest& r);
  Result<TxnResponse> txn(const TxnRequest& r);
  Result<CompactionResponse> compact(int64_t revision);

  // Conveniences.
  Result<std::optional<KeyValue>> get(std::string_view key);
  Result<int64_t> put(std::string_view key, std::string_view value, int64_t lease = 0);

  Result<LeaseGrantResponse> lease_grant(int64_t ttl_seconds, int64_t id = 0);
  Result<void> lease_revoke(int64_t id);
  Result<LeaseKeepAliveResponse> lease_keepalive(int64_t id);
  Result<LeaseTimeToLiveResponse> lease_time_to_live(int64_t id, bool keys = false);

  // Streams a watch: on_events gets each batch (one or more revisions, in order) and returns
  // false to end the watch. Returns when on_events says stop (ok), on a compacted start
  // revision (etcd error kErrCompacted), or on a transport failure; the caller resumes from the
  // last revision it saw + 1. `idle_timeout` bounds silence on the stream (keeper and etcd send
  // progress notifications when asked). `cancel`, when given, lets another thread end the watch
  // (see WatchCancel): the one way to use this Client from two threads for the same watch.
  Result<void> watch(
      const WatchCreateRequest& r,
      const std::function<bool(const std::vector<Event>&, int64_t revision)>& on_events,
      std::chrono::milliseconds idle_timeout = std::chrono::minutes(10),
      WatchCancel* cancel = nullptr);

  // Keeps a lease alive from a background thread (a keep-alive every ttl/3) until the returned
  // handle is destroyed; on_lost is called once if the lease expired or was revoked meanwhile.
  class KeepAlive {
   public:
    virtual ~KeepAlive() = default;
  };
  std::unique_ptr<KeepAlive> keep_alive(int64_t lease_id, int64_t ttl_seconds,
                                        std::function<void()> on_lost);

  const std::vector<HostPort>& endpoints() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace qufop::keeper
