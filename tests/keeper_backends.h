// Key-value backends for the keeper client suite, each on a free loopback port in its own temp
// dir: a real etcd (/usr/bin/etcd) or qufop-keeper. Stopping one removes its dir.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "common/config.h"
#include "common/result.h"
#include "tests/process.h"

namespace qufop::test {

class Backend {
 public:
  Backend(std::string name, std::string dir, uint16_t port, std::unique_ptr<Process> process);
  ~Backend();  // SIGTERM, SIGKILL after a grace period, then removes the dir
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  const std::string& name() const { return name_; }
  HostPort endpoint() const { return {"127.0.0.1", port_}; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // The tail of what the backend logged, for failure messages.
  std::string log_tail() const;

 private:
  std::string name_;
  std::string dir_;
  uint16_t port_;
  std::unique_ptr<Process> process_;
};

// Fails with code "not_found" when /usr/bin/etcd is not installed (the caller skips), else
// with the backend's log when it does not come up.
Result<std::unique_ptr<Backend>> start_etcd();
// QUFOP_BINARY_DIR/keeper/qufop-keeper; ready once /healthz answers.
Result<std::unique_ptr<Backend>> start_keeper();
// "etcd" or "keeper".
Result<std::unique_ptr<Backend>> start_backend(std::string_view name);

}  // namespace qufop::test
