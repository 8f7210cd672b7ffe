#include <cstdio>

#include "cli/command.h"
#include "cli/invocation.h"
#include "cli/table.h"
#include "common/api.h"

namespace qufop::cli {

int cmd_list(const std::vector<std::string>& args) {
  Invocation inv("list", "",
                 "Lists the UFOPs you own, the ones you use, and the public ones (admin: all).", {},
                 0, 0, true);
  if (int rc = inv.parse(args); rc >= 0) return rc;
  auto client = inv.client();
  if (!client) return inv.fail(client.error());
  auto res = client->call("GET", "/v1/ufops");
  if (!res) return inv.fail(res.error());
  if (inv.json()) {
    print_json(*res);
    return kOk;
  }
  auto list = list_field(*res, "ufops");
  if (!list) return inv.fail(list.error());
  Table table({"NAME", "MODE", "OWNER", "VERSION", "INSTANCES", "DESCRIPTION"});
  for (const auto& item : **list) {
    auto u = api::ufop_from_json(item);
    if (!u) return inv.fail(u.error());
    int64_t total = 0;
    for (const auto& [version, count] : u->desired) total += count;
    bool mine = u->owner == client->config().access_key;
    table.add({u->name, mode_name(u->mode), mine ? "you" : u->owner,
               u->latest_version > 0 ? std::to_string(u->latest_version) : "",
               std::to_string(total), u->desc});
  }
  if (table.rows() == 0) {
    std::printf("no UFOPs yet (qufopctl reg NAME -m 2)\n");
    return kOk;
  }
  std::fputs(table.render().c_str(), stdout);
  return kOk;
}

}  // namespace qufop::cli
