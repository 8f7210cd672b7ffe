#include <cstdio>

#include "cli/command.h"
#include "cli/invocation.h"

namespace qufop::cli {

int cmd_logs(const std::vector<std::string>& args) {
  Invocation inv("logs", "NAME [-i INSTANCE] [-f] [--tail N]",
                 "Prints an instance's output (the first instance's without -i); -f follows it.",
                 {{"instance", 'i', "INSTANCE", "the instance id (see qufopctl instances NAME)"},
                  {"follow", 'f', "", "keep printing new output until interrupted"},
                  {"tail", 0, "N", "only the last N lines"}},
                 1, 1, false);
  if (int rc = inv.parse(args); rc >= 0) return rc;
  const std::string& name = inv.arg(0);
  if (int rc = inv.check_name(name); rc >= 0) return rc;
  std::string query;
  if (inv.args().has("instance"))
    query += "&instance=" + http::url_encode(inv.args().get("instance"));
  if (inv.args().has("follow")) query += "&follow=1";
  if (inv.args().has("tail")) {
    const std::string& t = inv.args().get("tail");
    if (t.empty() || t.find_first_not_of("0123456789") != std::string::npos || t.size() > 9) {
      return inv.usage_error("--tail: '" + t + "' is not a line count");
    }
    query += "&tail=" + t;
  }
  if (!query.empty()) query[0] = '?';
  auto client = inv.client();
  if (!client) return inv.fail(client.error());
  // Following may stay silent for as long as the instance prints nothing.
  auto silence = inv.args().has("follow") ? std::chrono::milliseconds(std::chrono::hours(24 * 365))
                                          : std::chrono::milliseconds(std::chrono::minutes(1));
  auto res = get_streaming(
      *client, "/v1/ufops/" + name + "/logs" + query,
      [](std::string_view d) {
        std::fwrite(d.data(), 1, d.size(), stdout);
        std::fflush(stdout);
        return true;
      },
      silence);
  if (!res) return inv.fail(res.error());
  return kOk;
}

}  // namespace qufop::cli
