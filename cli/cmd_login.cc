#include <cstdio>
#include <cstdlib>

#include "cli/command.h"
#include "cli/invocation.h"

namespace qufop::cli {

// Checks the keys against the scheduler before writing them, so a typo is found now and not at
// the next command.
int cmd_login(const std::vector<std::string>& args) {
  Invocation inv("login", "--access-key AK --secret-key SK [--scheduler H:P] [--gate H:P]",
                 "Checks the keys with the scheduler, then writes them to the client config\n"
                 "(--config, else $QUFOP_CONFIG, else ~/.qufop/config) with mode 0600.",
                 {{"gate", 0, "HOST:PORT", "the gate (data requests), kept in the config"}}, 0, 0,
                 false);
  if (int rc = inv.parse(args); rc >= 0) return rc;
  if (!inv.args().has("access-key") || !inv.args().has("secret-key")) {
    return inv.usage_error("--access-key and --secret-key are required");
  }
  auto where =
      config_location(inv.args().get("config"), std::getenv("QUFOP_CONFIG"), std::getenv("HOME"));
  if (!where) return inv.fail(where.error());
  // An existing config gives the endpoints not named now; a broken one is replaced.
  ClientConfig config;
  if (auto old = load_client_config(ConfigLocation{where->path, false}); old) config = *old;
  if (inv.args().has("scheduler")) config.scheduler = inv.args().get("scheduler");
  if (inv.args().has("gate")) config.gate = inv.args().get("gate");
  if (auto gate = parse_host_port(config.gate, false); !gate) {
    return inv.usage_error("--gate: " + gate.error().message);
  }
  config.access_key = inv.args().get("access-key");
  config.secret_key = inv.args().get("secret-key");

  auto client = ApiClient::create(config);
  if (!client) return inv.fail(client.error());
  auto me = client->call("GET", "/v1/whoami");
  if (!me) return inv.fail(me.error());
  std::string name, user_class = "free";
  bool admin = false;
  if (me->is_object()) {
    const auto& o = me->as_object();
    if (auto n = json::get_string(o, "name"); n) name = *n;
    if (auto c = json::get_string(o, "class"); c) user_class = *c;
    if (auto a = json::get_bool(o, "admin"); a) admin = *a;
  }
  if (auto w = write_client_config(where->path, config); !w) return inv.fail(w.error());
  std::printf("logged in to %s as %s (%s%s); config written to %s\n", config.scheduler.c_str(),
              name.c_str(), user_class.c_str(), admin ? ", admin" : "", where->path.c_str());
  return kOk;
}

}  // namespace qufop::cli
