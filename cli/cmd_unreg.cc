#include <cstdio>

#include "cli/command.h"
#include "cli/invocation.h"

namespace qufop::cli {

int cmd_unreg(const std::vector<std::string>& args) {
  Invocation inv("unreg", "NAME",
                 "Deletes a UFOP and its versions. Refused while instances exist\n"
                 "(qufopctl resize NAME -n 0 first).",
                 {}, 1, 1, false);
  if (int rc = inv.parse(args); rc >= 0) return rc;
  const std::string& name = inv.arg(0);
  if (int rc = inv.check_name(name); rc >= 0) return rc;
  auto client = inv.client();
  if (!client) return inv.fail(client.error());
  auto res = client->call("DELETE", "/v1/ufops/" + name);
  if (!res) return inv.fail(res.error());
  std::printf("deleted %s\n", name.c_str());
  return kOk;
}

}  // namespace qufop::cli
