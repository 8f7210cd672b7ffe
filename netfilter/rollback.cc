#include "netfilter/rollback.h"

#include <spdlog/spdlog.h>

namespace qufop::netfilter {

void Rollback::run() {
  while (!steps_.empty()) {
    auto [step, undo] = std::move(steps_.back());
    steps_.pop_back();
    if (auto r = undo(); !r) {
      spdlog::warn("{}: rolling back '{}' failed: {}", what_, step, r.error().message);
    }
  }
}

}  // namespace qufop::netfilter
