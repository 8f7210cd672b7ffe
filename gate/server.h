// The data path: the gate's own HTTP/1.1 server on Beast (one io_context per worker thread, an
// acceptor that pauses at the connection cap), the admission steps (route, access, limits,
// queue) and the proxy to instances over per-thread keep-alive pools. Beast stays in the .cc.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/config.h"
#include "common/result.h"
#include "gate/options.h"
#include "gate/table.h"

namespace qufop {
class Metrics;
}

namespace qufop::gate {

class Server {
 public:
  // `metrics` holds the process-wide series (build info); /metrics appends the gate's own.
  Server(Options options, std::shared_ptr<Table> table, Metrics& metrics);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds; returns the bound address.
  Result<HostPort> listen(const HostPort& address);
  // Serves on the worker threads (this one included) until stop(); SIGTERM/SIGINT stop it.
  void run();
  // Stops accepting, lets requests in flight finish (bounded), then makes run() return.
  void stop();

  // The gate's series in Prometheus text (per-UFOP queue, in flight, requests, latency).
  std::string render_metrics() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace qufop::gate
