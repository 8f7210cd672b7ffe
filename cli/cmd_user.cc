#include <cstdio>

#include "cli/command.h"
#include "cli/invocation.h"
#include "cli/table.h"
#include "common/api.h"

namespace qufop::cli {
namespace {

int user_add(const std::vector<std::string>& args) {
  Invocation inv("user add", "NAME [--class free|paid]",
                 "Creates a user and prints its keys (admin only). The secret key is shown\n"
                 "this once: hand it to the user.",
                 {{"class", 0, "CLASS", "free (default) or paid: the gate's queue bounds"}}, 1, 1,
                 true);
  if (int rc = inv.parse(args); rc >= 0) return rc;
  const std::string& name = inv.arg(0);
  std::string user_class = inv.args().has("class") ? inv.args().get("class") : "free";
  if (user_class != "free" && user_class != "paid") {
    return inv.usage_error("--class: '" + user_class + "' is not free or paid");
  }
  auto client = inv.client();
  if (!client) return inv.fail(client.error());
  auto res = client->call("POST", "/v1/users", json::Object{{"name", name}, {"class", user_class}});
  if (!res) return inv.fail(res.error());
  if (inv.json()) {
    print_json(*res);
    return kOk;
  }
  auto user = api::user_from_json(*res);
  if (!user) return inv.fail(user.error());
  std::printf("user %s (%s%s)\naccess key: %s\nsecret key: %s\n", user->name.c_str(),
              user->user_class.c_str(), user->admin ? ", admin" : "", user->access_key.c_str(),
              user->secret_key.c_str());
  return kOk;
}

int user_list(const std::vector<std::string>& args) {
  Invocation inv("user list", "", "Lists the users (admin only; no secrets).", {}, 0, 0, true);
  if (int rc = inv.parse(args); rc >= 0) return rc;
  auto client = inv.client();
  if (!client) return inv.fail(client.error());
  auto res = client->call("GET", "/v1/users");
  if (!res) return inv.fail(res.error());
  if (inv.json()) {
    print_json(*res);
    return kOk;
  }
  Table table({"NAME", "ACCESS KEY", "CLASS", "ADMIN"});
  const auto* users = res->is_object() ? res->as_object().if_contains("users") : nullptr;
  if (users == nullptr || !users->is_array()) {
    return inv.fail(Error::invalid("the scheduler's answer has no \"users\" list"));
  }
  for (const auto& u : users->as_array()) {
    if (!u.is_object()) continue;
    const auto& o = u.as_object();
    auto name = json::get_string(o, "name");
    auto ak = json::get_string(o, "access_key");
    auto cls = json::get_string(o, "class");
    auto admin = json::get_bool(o, "admin");
    table.add({name ? *name : "", ak ? *ak : "", cls ? *cls : "", admin && *admin ? "yes" : "no"});
  }
  std::fputs(table.render().c_str(), stdout);
  return kOk;
}

}  // namespace

int cmd_user(const std::vector<std::string>& args) {
  std::vector<std::string> rest(args.empty() ? args.begin() : args.begin() + 1, args.end());
  if (!args.empty() && args[0] == "add") return user_add(rest);
  if (!args.empty() && args[0] == "list") return user_list(rest);
  if (!args.empty() && (args[0] == "-h" || args[0] == "--help")) {
    std::printf("usage: qufopctl user add NAME [--class free|paid]\n       qufopctl user list\n");
    return kOk;
  }
  std::fprintf(stderr, "qufopctl user: expected 'add NAME' or 'list' (see qufopctl user --help)\n");
  return kUsage;
}

}  // namespace qufop::cli
