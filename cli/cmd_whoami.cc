#include <cstdio>

#include "cli/command.h"
#include "cli/invocation.h"

namespace qufop::cli {

int cmd_whoami(const std::vector<std::string>& args) {
  Invocation inv("whoami", "", "Shows the user the configured keys belong to.", {}, 0, 0, true);
  if (int rc = inv.parse(args); rc >= 0) return rc;
  auto client = inv.client();
  if (!client) return inv.fail(client.error());
  auto me = client->call("GET", "/v1/whoami");
  if (!me) return inv.fail(me.error());
  if (inv.json()) {
    print_json(*me);
    return kOk;
  }
  if (!me->is_object()) return inv.fail(Error::invalid("whoami: expected a JSON object"));
  const auto& o = me->as_object();
  auto name = json::get_string(o, "name");
  auto ak = json::get_string(o, "access_key");
  auto cls = json::get_string(o, "class");
  auto admin = json::get_bool(o, "admin");
  if (!name) return inv.fail(name.error().wrap("whoami"));
  std::printf("%s (access key %s, %s%s) at %s\n", name->c_str(), ak ? ak->c_str() : "?",
              cls ? cls->c_str() : "free", admin && *admin ? ", admin" : "",
              client->scheduler().str().c_str());
  return kOk;
}

}  // namespace qufop::cli
