#include <cstdio>

#include "cli/command.h"
#include "common/config.h"
#include "common/http_client.h"
#include "common/json.h"

namespace qufop::cli {
namespace {

struct Probe {
  const char* daemon;
  const char* flag;
  const char* default_address;
};

constexpr Probe kProbes[] = {
    {"qufop-keeper", "keeper", "127.0.0.1:7100"},
    {"qufop-scheduler", "scheduler", "127.0.0.1:7200"},
    {"qufop-noded", "noded", "127.0.0.1:7300"},
    {"qufop-builder", "builder", "127.0.0.1:7400"},
    {"qufop-gate", "gate", "127.0.0.1:7500"},
};

// "up" or the reason it is not.
std::string probe(const HostPort& address) {
  http::Client client(address.host, address.port,
                      {std::chrono::milliseconds(1000), std::chrono::milliseconds(2000)});
  auto res = client.get("/healthz");
  if (!res) return res.error().message;
  if (res->status != 200) return "answered " + std::to_string(res->status);
  return "up";
}

}  // namespace

int cmd_status(const std::vector<std::string>& args) {
  std::vector<FlagSpec> specs;
  for (const auto& p : kProbes) {
    specs.push_back(
        {p.flag, "HOST:PORT", std::string("address of ") + p.daemon, p.default_address});
  }
  specs.push_back({"json", "", "print JSON", ""});
  Flags flags("qufopctl status", "Shows whether each qufop daemon answers its /healthz.", specs);
  std::vector<std::string> argv(args.begin(), args.end());
  if (auto r = flags.parse(argv); !r) {
    std::fprintf(stderr, "qufopctl status: %s\n", r.error().message.c_str());
    return kUsage;
  }
  if (flags.help_requested()) {
    std::fputs(flags.usage().c_str(), stdout);
    return kOk;
  }
  bool all_up = true;
  json::Array rows;
  for (const auto& p : kProbes) {
    auto address = parse_host_port(flags.get(p.flag), false);
    if (!address) {
      std::fprintf(stderr, "qufopctl status: --%s: %s\n", p.flag, address.error().message.c_str());
      return kUsage;
    }
    std::string state = probe(*address);
    all_up = all_up && state == "up";
    if (flags.get_bool("json")) {
      rows.push_back(
          json::Object{{"daemon", p.daemon}, {"address", address->str()}, {"state", state}});
    } else {
      std::printf("%-16s %-22s %s\n", p.daemon, address->str().c_str(), state.c_str());
    }
  }
  if (flags.get_bool("json")) std::printf("%s\n", json::serialize(rows).c_str());
  return all_up ? kOk : kFailed;
}

}  // namespace qufop::cli
