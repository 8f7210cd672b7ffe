#include <cstdio>

#include "cli/command.h"
#include "cli/invocation.h"
#include "common/api.h"

namespace qufop::cli {

int cmd_reg(const std::vector<std::string>& args) {
  Invocation inv("reg", "NAME -m MODE [--desc TEXT]",
                 "Registers a UFOP. Modes: 2 private (only you call it), 1 semi-public (others\n"
                 "call it after 'qufopctl use NAME'), 0 public (admin only).",
                 {{"mode", 'm', "MODE", "0 public, 1 semi-public, 2 private"},
                  {"desc", 0, "TEXT", "a one-line description"}},
                 1, 1, true);
  if (int rc = inv.parse(args); rc >= 0) return rc;
  const std::string& name = inv.arg(0);
  if (int rc = inv.check_name(name); rc >= 0) return rc;
  const std::string& mode_text = inv.args().get("mode");
  if (!inv.args().has("mode")) return inv.usage_error("-m MODE is required (0, 1 or 2)");
  if (mode_text != "0" && mode_text != "1" && mode_text != "2") {
    return inv.usage_error("-m: '" + mode_text +
                           "' is not a mode (0 public, 1 semi-public, 2 private)");
  }
  auto client = inv.client();
  if (!client) return inv.fail(client.error());
  auto res = client->call(
      "POST", "/v1/ufops",
      json::Object{{"name", name}, {"mode", mode_text[0] - '0'}, {"desc", inv.args().get("desc")}});
  if (!res) return inv.fail(res.error());
  if (inv.json()) {
    print_json(*res);
    return kOk;
  }
  auto rec = api::ufop_from_json(*res);
  if (!rec) return inv.fail(rec.error());
  std::printf("registered %s (mode %d, %s); next: qufopctl build %s -d DIR\n", rec->name.c_str(),
              static_cast<int>(rec->mode), mode_name(rec->mode), rec->name.c_str());
  return kOk;
}

}  // namespace qufop::cli
