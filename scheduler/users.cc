#include "scheduler/users.h"

#include "common/auth.h"
#include "common/random.h"
#include "keeper/client.h"

namespace qufop::scheduler {

namespace {
constexpr auto kWindow = std::chrono::minutes(15);

Error unauthorized(std::string message) { return {"unauthorized", std::move(message), 0}; }
}  // namespace

Users::Users(RecordStore& store) : store_(store), replay_(kWindow, kReplayCapacity) {}

Result<std::optional<api::UserRecord>> Users::load(keeper::Client& client) {
  std::map<std::string, api::UserRecord> users;
  std::set<std::pair<std::string, std::string>> uses;
  for (auto prefix : {api::kUsersPrefix, api::kUsesPrefix}) {
    keeper::RangeRequest r;
    r.key = std::string(prefix);
    r.range_end = keeper::prefix_end(prefix);
    auto res = client.range(r);
    if (!res) return res.error().wrap("reading " + std::string(prefix) + " from keeper");
    for (const auto& kv : res->kvs) {
      if (prefix == api::kUsersPrefix) {
        auto u = api::parse_record(kv.value, api::user_from_json);
        if (u) users[u->access_key] = *u;
      } else {
        std::string rest = kv.key.substr(prefix.size());
        auto slash = rest.find('/');
        if (slash != std::string::npos) uses.emplace(rest.substr(0, slash), rest.substr(slash + 1));
      }
    }
  }
  bool has_admin = false;
  for (const auto& [ak, u] : users) has_admin = has_admin || u.admin;
  {
    std::lock_guard lock(mu_);
    by_key_ = std::move(users);
    uses_ = std::move(uses);
  }
  if (has_admin) return std::optional<api::UserRecord>();
  auto admin = add("admin", "paid", true);
  if (!admin) return admin.error();
  return std::optional<api::UserRecord>(*admin);
}

Result<api::UserRecord> Users::add(const std::string& name, const std::string& user_class,
                                   bool admin) {
  if (name.empty() || name.size() > 64) {
    return Error::invalid("name: must be 1 to 64 characters");
  }
  if (user_class != "free" && user_class != "paid") {
    return Error::invalid("class '" + user_class + "': must be free or paid");
  }
  {
    std::lock_guard lock(mu_);
    for (const auto& [ak, u] : by_key_) {
      if (u.name == name) return Error{"already_exists", "user '" + name + "' exists", 0};
    }
  }
  api::UserRecord u;
  u.name = name;
  u.user_class = user_class;
  u.admin = admin;
  auto ak = random_hex(20);
  auto sk = random_hex(20);
  if (!ak) return ak.error();
  if (!sk) return sk.error();
  u.access_key = *ak;
  u.secret_key = *sk;
  auto created = store_.create(api::user_key(u.access_key), api::to_json(u));
  if (!created) return created.error();
  if (!*created) return Error{"conflict", "access key collision; try again", 0};
  std::lock_guard lock(mu_);
  by_key_[u.access_key] = u;
  return u;
}

std::vector<api::UserRecord> Users::list() const {
  std::lock_guard lock(mu_);
  std::vector<api::UserRecord> out;
  for (const auto& [ak, u] : by_key_) out.push_back(u);
  return out;
}

Result<void> Users::use(const std::string& access_key, const std::string& ufop) {
  Batch batch;
  batch.put(api::use_key(access_key, ufop), json::Object{});
  if (auto w = store_.apply(batch); !w) return w.error();
  std::lock_guard lock(mu_);
  uses_.emplace(access_key, ufop);
  return ok();
}

bool Users::uses(const std::string& access_key, const std::string& ufop) const {
  std::lock_guard lock(mu_);
  return uses_.count({access_key, ufop}) > 0;
}

Result<api::UserRecord> Users::authenticate(const http::Request& req,
                                            std::chrono::system_clock::time_point now) {
  std::string_view header = req.header("Authorization");
  if (header.empty())
    return unauthorized("the request is not signed (Authorization: Qiniu AK:SIGN)");
  auth::SignableRequest s;
  s.method = req.method;
  s.path = req.path;
  s.query = req.query;
  s.host = std::string(req.header("Host"));
  s.content_type = std::string(req.header("Content-Type"));
  s.headers = req.headers;
  s.body = req.body;
  auth::Verifier verifier(
      [this](std::string_view ak) -> std::optional<std::string> {
        std::lock_guard lock(mu_);
        auto it = by_key_.find(std::string(ak));
        if (it == by_key_.end()) return std::nullopt;
        return it->second.secret_key;
      },
      kWindow);
  auto verified = verifier.verify_full(header, s, now);
  if (!verified) return unauthorized(verified.error().message);
  // Keyed on the decoded signature, not the header text: a re-spelled header (no base64
  // padding, more spaces after "Qiniu") is the same signature and the same replay.
  if (!replay_.first_use(*verified, now)) {
    return unauthorized("replayed request: this signature was already used");
  }
  std::lock_guard lock(mu_);
  return by_key_.at(verified->access_key);
}

}  // namespace qufop::scheduler
