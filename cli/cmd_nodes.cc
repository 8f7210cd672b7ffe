#include <cstdio>

#include "cli/command.h"
#include "cli/invocation.h"
#include "cli/table.h"
#include "common/api.h"

namespace qufop::cli {

int cmd_nodes(const std::vector<std::string>& args) {
  Invocation inv("nodes", "",
                 "Lists the nodes: up or down, capacity and what instances hold of it.", {}, 0, 0,
                 true);
  if (int rc = inv.parse(args); rc >= 0) return rc;
  auto client = inv.client();
  if (!client) return inv.fail(client.error());
  auto res = client->call("GET", "/v1/nodes");
  if (!res) return inv.fail(res.error());
  if (inv.json()) {
    print_json(*res);
    return kOk;
  }
  auto list = list_field(*res, "nodes");
  if (!list) return inv.fail(list.error());
  Table table(
      {"ID", "ADDRESS", "STATE", "CPU (USED/CAP)", "MEMORY (USED/CAP)", "INSTANCES", "LAST SEEN"});
  for (const auto& item : **list) {
    auto n = api::node_from_json(item);
    if (!n) return inv.fail(n.error());
    const auto& o = item.as_object();
    api::Resources allocated;
    if (const auto* a = o.if_contains("allocated"); a != nullptr) {
      auto r = api::resources_from_json(*a, "node.allocated");
      if (!r) return inv.fail(r.error());
      allocated = *r;
    }
    auto instances = json::get_int(o, "instances");
    auto seen = json::get_int(o, "last_seen_ago_ms");
    table.add({n->id, n->address, n->health == api::NodeHealth::kUp ? "up" : "down",
               format_cpu(allocated.cpu_millis) + "/" + format_cpu(n->capacity.cpu_millis),
               format_bytes(allocated.memory_bytes) + "/" + format_bytes(n->capacity.memory_bytes),
               instances ? std::to_string(*instances) : "",
               seen ? format_age(1, 1 + *seen) + " ago" : ""});
  }
  if (table.rows() == 0) {
    std::printf("no nodes have registered\n");
    return kOk;
  }
  std::fputs(table.render().c_str(), stdout);
  return kOk;
}

}  // namespace qufop::cli
