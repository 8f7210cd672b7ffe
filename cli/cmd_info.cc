#include <cstdio>

#include "cli/command.h"
#include "cli/invocation.h"
#include "cli/table.h"
#include "common/api.h"

namespace qufop::cli {

int cmd_info(const std::vector<std::string>& args) {
  Invocation inv("info", "NAME",
                 "Shows a UFOP: owner, mode, versions wanted, and why instances cannot be\n"
                 "placed, if they cannot.",
                 {}, 1, 1, true);
  if (int rc = inv.parse(args); rc >= 0) return rc;
  const std::string& name = inv.arg(0);
  if (int rc = inv.check_name(name); rc >= 0) return rc;
  auto client = inv.client();
  if (!client) return inv.fail(client.error());
  auto res = client->call("GET", "/v1/ufops/" + name);
  if (!res) return inv.fail(res.error());
  if (inv.json()) {
    print_json(*res);
    return kOk;
  }
  auto u = api::ufop_from_json(*res);
  if (!u) return inv.fail(u.error());
  std::string desired;
  int64_t total = 0;
  for (const auto& [version, count] : u->desired) {
    if (!desired.empty()) desired += ", ";
    desired += "v" + std::to_string(version) + ": " + std::to_string(count);
    total += count;
  }
  std::string unschedulable;
  if (auto t = json::get_string(res->as_object(), "unschedulable"); t) unschedulable = *t;
  std::string backoff;  // a version crash-looping: when its next instance is placed
  if (auto t = json::get_string(res->as_object(), "backoff"); t) backoff = *t;
  std::printf("name:           %s\n", u->name.c_str());
  std::printf("owner:          %s\n", u->owner.c_str());
  std::printf("mode:           %d (%s)\n", static_cast<int>(u->mode), mode_name(u->mode));
  std::printf("description:    %s\n", u->desc.empty() ? "-" : u->desc.c_str());
  std::printf("created:        %s ago\n", format_age(u->created_ms, now_ms()).c_str());
  std::printf("latest version: %s\n",
              u->latest_version > 0 ? std::to_string(u->latest_version).c_str() : "none built");
  std::printf("instances:      %lld wanted (%s)\n", static_cast<long long>(total),
              desired.empty() ? "none" : desired.c_str());
  std::printf("concurrency:    %d\n", u->concurrency);
  if (!unschedulable.empty()) std::printf("unschedulable:  %s\n", unschedulable.c_str());
  if (!backoff.empty()) std::printf("backoff:        %s\n", backoff.c_str());
  return kOk;
}

}  // namespace qufop::cli
