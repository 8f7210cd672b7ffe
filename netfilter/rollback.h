// A rollback guard for multi-step host changes: each completed step registers its undo; unless
// commit() is called, the destructor undoes them in reverse. An error during the undo is logged
// and never replaces the error that caused the rollback (docs/error-handling.md).
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"

namespace qufop::netfilter {

class Rollback {
 public:
  // `what` names the change in logs: "attach inst-1".
  explicit Rollback(std::string what) : what_(std::move(what)) {}
  ~Rollback() { run(); }
  Rollback(const Rollback&) = delete;
  Rollback& operator=(const Rollback&) = delete;

  void add(std::string step, std::function<Result<void>()> undo) {
    steps_.emplace_back(std::move(step), std::move(undo));
  }
  void commit() { steps_.clear(); }
  // Undoes now (what the destructor would do); the guard is then empty.
  void run();

 private:
  std::string what_;
  std::vector<std::pair<std::string, std::function<Result<void>()>>> steps_;
};

}  // namespace qufop::netfilter
