// Users and request authentication for the scheduler's public API: the user records (keeper
// /users/<ak>, /uses/<ak>/<ufop>), signature checks (the Qiniu scheme with X-Qiniu-Date inside
// ±15 min, common/auth.h) and replay refusal (common/replay.h: a signature is accepted once,
// however its header is spelled; clients add a random X-Qiniu-Nonce so two identical requests
// still sign differently).
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/api.h"
#include "common/http.h"
#include "common/replay.h"
#include "common/result.h"
#include "scheduler/records.h"

namespace qufop::scheduler {

class Users {
 public:
  // Signatures remembered to refuse replays within the ±15 min window; past that the oldest
  // are forgotten early (counted by the guard).
  static constexpr size_t kReplayCapacity = 1'000'000;

  explicit Users(RecordStore& store);

  // Loads users and uses from keeper; creates the first admin when there is none and returns
  // it (so its keys can be written to admin.conf), else nullopt.
  Result<std::optional<api::UserRecord>> load(keeper::Client& client);

  // The caller of a signed request (`host` is the Host header as received), or an
  // "unauthorized" error: unsigned, unknown key, bad signature, stale date or a replay.
  Result<api::UserRecord> authenticate(const http::Request& req,
                                       std::chrono::system_clock::time_point now);

  // A new user with fresh keys (admin only; the caller checks).
  Result<api::UserRecord> add(const std::string& name, const std::string& user_class,
                              bool admin = false);
  std::vector<api::UserRecord> list() const;
  Result<void> use(const std::string& access_key, const std::string& ufop);
  bool uses(const std::string& access_key, const std::string& ufop) const;

 private:
  RecordStore& store_;
  mutable std::mutex mu_;
  std::map<std::string, api::UserRecord> by_key_;
  std::set<std::pair<std::string, std::string>> uses_;  // (access key, ufop)
  auth::ReplayGuard replay_;  // signatures accepted within the date window; locks itself
};

}  // namespace qufop::scheduler
