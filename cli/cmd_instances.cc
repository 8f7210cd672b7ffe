#include <cstdio>

#include "cli/command.h"
#include "cli/invocation.h"
#include "cli/table.h"
#include "common/api.h"

namespace qufop::cli {

int cmd_instances(const std::vector<std::string>& args) {
  Invocation inv("instances", "NAME",
                 "Lists the UFOP's instances: where they run, their state and version.", {}, 1, 1,
                 true);
  if (int rc = inv.parse(args); rc >= 0) return rc;
  const std::string& name = inv.arg(0);
  if (int rc = inv.check_name(name); rc >= 0) return rc;
  auto client = inv.client();
  if (!client) return inv.fail(client.error());
  auto res = client->call("GET", "/v1/ufops/" + name + "/instances");
  if (!res) return inv.fail(res.error());
  if (inv.json()) {
    print_json(*res);
    return kOk;
  }
  auto list = list_field(*res, "instances");
  if (!list) return inv.fail(list.error());
  Table table({"ID", "NODE", "ADDRESS", "HOST PORT", "STATE", "VERSION", "AGE", "MESSAGE"});
  int64_t now = now_ms();
  for (const auto& item : **list) {
    auto i = api::instance_from_json(item);
    if (!i) return inv.fail(i.error());
    std::string state(api::to_string(i->state));
    if (i->stop_requested && !api::is_terminal(i->state)) state += " (stopping)";
    table.add({i->id, i->node, i->address.empty() ? i->ip : i->address,
               i->host_port > 0 ? std::to_string(i->host_port) : "", state,
               std::to_string(i->version), format_age(i->created_ms, now), i->message});
  }
  if (table.rows() == 0) {
    std::printf("%s has no instances (qufopctl resize %s -n N)\n", name.c_str(), name.c_str());
    return kOk;
  }
  std::fputs(table.render().c_str(), stdout);
  return kOk;
}

}  // namespace qufop::cli
