#include <cstdio>

#include "cli/command.h"
#include "cli/invocation.h"
#include "cli/table.h"
#include "common/api.h"

namespace qufop::cli {

int cmd_ver(const std::vector<std::string>& args) {
  Invocation inv("ver", "NAME", "Lists the UFOP's built versions with their image digests.", {}, 1,
                 1, true);
  if (int rc = inv.parse(args); rc >= 0) return rc;
  const std::string& name = inv.arg(0);
  if (int rc = inv.check_name(name); rc >= 0) return rc;
  auto client = inv.client();
  if (!client) return inv.fail(client.error());
  auto res = client->call("GET", "/v1/ufops/" + name + "/versions");
  if (!res) return inv.fail(res.error());
  if (inv.json()) {
    print_json(*res);
    return kOk;
  }
  auto list = list_field(*res, "versions");
  if (!list) return inv.fail(list.error());
  Table table({"VERSION", "DIGEST", "CPU", "MEMORY", "CREATED"});
  int64_t now = now_ms();
  for (const auto& item : **list) {
    auto v = api::version_from_json(item);
    if (!v) return inv.fail(v.error());
    table.add({std::to_string(v->version), v->digest,
               v->spec.cpu_millis > 0 ? format_cpu(v->spec.cpu_millis) : "",
               v->spec.memory_bytes > 0 ? format_bytes(v->spec.memory_bytes) : "",
               format_age(v->created_ms, now)});
  }
  if (table.rows() == 0) {
    std::printf("%s has no versions yet (qufopctl build %s -d DIR)\n", name.c_str(), name.c_str());
    return kOk;
  }
  std::fputs(table.render().c_str(), stdout);
  return kOk;
}

}  // namespace qufop::cli
