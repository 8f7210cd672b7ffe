#include <cstdio>

#include "cli/command.h"
#include "cli/invocation.h"

namespace qufop::cli {

int cmd_use(const std::vector<std::string>& args) {
  Invocation inv("use", "NAME",
                 "Adds another user's semi-public (or a public) UFOP to the ones you may call.", {},
                 1, 1, false);
  if (int rc = inv.parse(args); rc >= 0) return rc;
  const std::string& name = inv.arg(0);
  if (int rc = inv.check_name(name); rc >= 0) return rc;
  auto client = inv.client();
  if (!client) return inv.fail(client.error());
  auto res = client->call("POST", "/v1/ufops/" + name + "/use");
  if (!res) return inv.fail(res.error());
  std::printf("you may now call %s through the gate at %s\n", name.c_str(),
              client->config().gate.c_str());
  return kOk;
}

}  // namespace qufop::cli
