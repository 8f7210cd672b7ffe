#include <cstdio>

#include "cli/command.h"
#include "cli/invocation.h"

namespace qufop::cli {

namespace {
// A positive integer flag value, or -1.
long long positive(const std::string& text) {
  char* end = nullptr;
  long long n = std::strtoll(text.c_str(), &end, 10);
  return text.empty() || *end != '\0' || n < 1 ? -1 : n;
}
}  // namespace

int cmd_upgrade(const std::vector<std::string>& args) {
  Invocation inv("upgrade", "NAME (-r K | --all) -v V",
                 "Gray upgrade: starts K instances of version V, waits until they are healthy,\n"
                 "then stops K instances of older versions (--all: every instance).",
                 {{"replace", 'r', "K", "how many instances move to V"},
                  {"all", 0, "", "move every instance to V"},
                  {"version", 'v', "V", "the target version (see qufopctl ver NAME)"}},
                 1, 1, true);
  if (int rc = inv.parse(args); rc >= 0) return rc;
  const std::string& name = inv.arg(0);
  if (int rc = inv.check_name(name); rc >= 0) return rc;
  bool all = inv.args().has("all");
  if (all == inv.args().has("replace")) return inv.usage_error("give either -r K or --all");
  if (!inv.args().has("version")) return inv.usage_error("-v V is required");
  long long version = positive(inv.args().get("version"));
  if (version < 0) {
    return inv.usage_error("-v: '" + inv.args().get("version") + "' is not a version (1, 2, ...)");
  }
  json::Object body{{"version", version}};
  if (!all) {
    long long k = positive(inv.args().get("replace"));
    if (k < 0) return inv.usage_error("-r: '" + inv.args().get("replace") + "' is not a count");
    body["replace"] = k;
  }
  auto client = inv.client();
  if (!client) return inv.fail(client.error());
  auto res = client->call("POST", "/v1/ufops/" + name + "/upgrade", body);
  if (!res) return inv.fail(res.error());
  return print_scale_result(inv, name, *res);
}

}  // namespace qufop::cli
