#include <cstdio>

#include "cli/command.h"
#include "cli/invocation.h"

namespace qufop::cli {

int print_scale_result(const Invocation& inv, const std::string& name, const json::Value& v) {
  if (inv.json()) {
    print_json(v);
    return kOk;
  }
  if (!v.is_object()) return inv.fail(Error::invalid("the scheduler's answer is not an object"));
  const auto& o = v.as_object();
  auto count = json::get_int(o, "count");
  std::string per_version;
  if (const auto* d = o.if_contains("desired"); d != nullptr && d->is_object()) {
    for (const auto& [version, n] : d->as_object()) {
      if (!per_version.empty()) per_version += ", ";
      per_version += "v" + std::string(version) + ": " +
                     (n.is_int64() ? std::to_string(n.as_int64()) : json::serialize(n));
    }
  }
  std::printf("%s: %lld instance(s) wanted (%s)\n", name.c_str(),
              static_cast<long long>(count ? *count : 0),
              per_version.empty() ? "none" : per_version.c_str());
  auto unschedulable = json::get_int(o, "unschedulable");
  if (unschedulable && *unschedulable > 0) {
    auto reason = json::get_string(o, "reason");
    std::printf("%lld of them cannot be placed now: %s\n", static_cast<long long>(*unschedulable),
                reason && !reason->empty() ? reason->c_str() : "no reason given");
  }
  return kOk;
}

int cmd_resize(const std::vector<std::string>& args) {
  Invocation inv("resize", "NAME -n N [--refuse]",
                 "Sets how many instances of the UFOP run (of its current version).\n"
                 "With --refuse nothing changes unless all N fit in the cluster now.",
                 {{"count", 'n', "N", "the number of instances"},
                  {"refuse", 0, "", "refuse instead of placing only what fits"}},
                 1, 1, true);
  if (int rc = inv.parse(args); rc >= 0) return rc;
  const std::string& name = inv.arg(0);
  if (int rc = inv.check_name(name); rc >= 0) return rc;
  if (!inv.args().has("count")) return inv.usage_error("-n N is required");
  char* end = nullptr;
  const std::string& text = inv.args().get("count");
  long long n = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || n < 0 || n > 100000) {
    return inv.usage_error("-n: '" + text + "' is not a count (0-100000)");
  }
  auto client = inv.client();
  if (!client) return inv.fail(client.error());
  auto res = client->call("POST", "/v1/ufops/" + name + "/resize",
                          json::Object{{"count", n}, {"refuse", inv.args().has("refuse")}});
  if (!res) return inv.fail(res.error());
  return print_scale_result(inv, name, *res);
}

}  // namespace qufop::cli
