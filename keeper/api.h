// keeper's HTTP API: etcd v3's JSON gateway (/v3/kv/*, /v3/lease/*, /v3/watch) over the store.
#pragma once

#include <memory>

namespace boost::asio {
class io_context;
}

namespace qufop {
class Metrics;
namespace http {
class Server;
}
}  // namespace qufop

namespace qufop::keeper {

class Store;

struct ApiOptions {
  // A watch asked for progress_notify gets a header-only message after this much silence.
  int progress_interval_ms = 5'000;
};

class Api {
 public:
  Api(boost::asio::io_context& io, http::Server& server, Store& store, Metrics& metrics,
      ApiOptions options = {});
  ~Api();  // cancels every watch and joins the background thread
  Api(const Api&) = delete;
  Api& operator=(const Api&) = delete;

  // Stops the lease and watch timers and ends open watch streams (for a graceful stop).
  void shutdown();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace qufop::keeper
