#include "gate/options.h"

#include <thread>

#include "keeper/client.h"

namespace qufop::gate {

std::vector<FlagSpec> option_flags() {
  return {
      {"keeper", "URL[,URL]", "keeper (or etcd) endpoints", "http://127.0.0.1:7100"},
      {"queue-free", "N", "queue bound for free and unsigned callers (503 beyond)", "10"},
      {"queue-paid", "N", "queue bound for paid callers (503 beyond)", "3"},
      {"queue-timeout", "DURATION", "longest wait in a queue (504 after)", "30s"},
      {"max-connections", "N", "client connections at once; accepting pauses at the cap", "10000"},
      {"user-rate", "N", "requests/s per signed user (token bucket); 0: unlimited", "0"},
      {"user-burst", "N", "token bucket size per user; 0: the rate", "0"},
      {"anon-rate", "N",
       "requests/s per client address for unsigned calls (token bucket, 429 beyond); 0: unlimited",
       "0"},
      {"anon-burst", "N", "token bucket size per client address; 0: the rate", "0"},
      {"anon-clients", "N",
       "client addresses tracked for --anon-rate; beyond, new ones share a bucket", "100000"},
      {"replay-cache", "N",
       "signatures remembered to refuse a replayed signed request (401); 0: no refusal", "1000000"},
      {"command-concurrency", "N", "requests per UFOP admitted at once (503 beyond); 0: no cap",
       "0"},
      {"upstream-timeout", "DURATION",
       "wait for an instance's response head, and each silence in its body (504)", "60s"},
      {"connect-timeout", "DURATION", "connecting to an instance", "2s"},
      {"client-timeout", "DURATION", "each read/write phase with a client (idle keep-alive too)",
       "60s"},
      {"eject-after", "N", "consecutive failures that eject an instance; 0: never", "3"},
      {"eject-for", "DURATION", "how long an ejected instance gets nothing", "10s"},
      {"threads", "N", "worker threads; 0: one per core", "0"},
      {"max-body", "BYTES", "largest request body (413 beyond)", "1g"},
      {"fast-path", "BOOL",
       "serve small keep-alive requests with the gate's own head scanner (false: Beast only)",
       "true"},
  };
}

// Assigns a Result's value, or returns its error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  do {                              \
    auto r_ = (expr);               \
    if (!r_) return r_.error();     \
    lhs = *r_;                      \
  } while (0)

namespace {

Result<int64_t> duration(const Flags& f, const char* name) {
  auto d = parse_duration_ms(f.get(name));
  if (!d) return d.error().wrap(std::string("--") + name);
  if (*d <= 0) return Error::invalid(std::string("--") + name + ": must be positive");
  return *d;
}

Result<double> number(const Flags& f, const char* name) {
  try {
    size_t used = 0;
    double v = std::stod(f.get(name), &used);
    if (used == f.get(name).size() && v >= 0 && v < 1e12) return v;
  } catch (const std::exception&) {
  }
  return Error::invalid(std::string("--") + name + ": '" + f.get(name) +
                        "' is not a non-negative number");
}

}  // namespace

Result<Options> options_from_flags(const Flags& f) {
  Options o;
  auto keeper = keeper::parse_endpoints(f.get("keeper"));
  if (!keeper) return keeper.error().wrap("--keeper");
  o.keeper = std::move(*keeper);
  int64_t qf = 0;
  ASSIGN_OR_RETURN(qf, f.get_int("queue-free", 0, 1'000'000));
  int64_t qp = 0;
  ASSIGN_OR_RETURN(qp, f.get_int("queue-paid", 0, 1'000'000));
  o.queue_free = static_cast<size_t>(qf);
  o.queue_paid = static_cast<size_t>(qp);
  ASSIGN_OR_RETURN(o.queue_timeout_ms, duration(f, "queue-timeout"));
  int64_t mc = 0;
  ASSIGN_OR_RETURN(mc, f.get_int("max-connections", 1, 10'000'000));
  o.max_connections = static_cast<size_t>(mc);
  ASSIGN_OR_RETURN(o.user_rate, number(f, "user-rate"));
  ASSIGN_OR_RETURN(o.user_burst, number(f, "user-burst"));
  if (o.user_burst == 0) o.user_burst = o.user_rate;
  ASSIGN_OR_RETURN(o.anon_rate, number(f, "anon-rate"));
  ASSIGN_OR_RETURN(o.anon_burst, number(f, "anon-burst"));
  if (o.anon_burst == 0) o.anon_burst = o.anon_rate;
  int64_t ac = 0;
  ASSIGN_OR_RETURN(ac, f.get_int("anon-clients", 1, 100'000'000));
  o.anon_clients = static_cast<size_t>(ac);
  int64_t rc = 0;
  ASSIGN_OR_RETURN(rc, f.get_int("replay-cache", 0, 1'000'000'000));
  o.replay_cache = static_cast<size_t>(rc);
  int64_t cc = 0;
  ASSIGN_OR_RETURN(cc, f.get_int("command-concurrency", 0, 10'000'000));
  o.command_concurrency = static_cast<int>(cc);
  ASSIGN_OR_RETURN(o.upstream_timeout_ms, duration(f, "upstream-timeout"));
  ASSIGN_OR_RETURN(o.connect_timeout_ms, duration(f, "connect-timeout"));
  ASSIGN_OR_RETURN(o.client_timeout_ms, duration(f, "client-timeout"));
  int64_t ea = 0;
  ASSIGN_OR_RETURN(ea, f.get_int("eject-after", 0, 1'000'000));
  o.eject_after = static_cast<int>(ea);
  ASSIGN_OR_RETURN(o.eject_for_ms, duration(f, "eject-for"));
  int64_t th = 0;
  ASSIGN_OR_RETURN(th, f.get_int("threads", 0, 256));
  o.threads = static_cast<int>(th);
  if (o.threads == 0)
    o.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  auto body = parse_bytes(f.get("max-body"));
  if (!body) return body.error().wrap("--max-body");
  o.max_body_bytes = *body;
  const std::string& fast = f.get("fast-path");
  if (fast != "true" && fast != "false") {
    return Error::invalid("--fast-path: '" + fast + "' is neither true nor false");
  }
  o.fast_path = fast == "true";
  return o;
}

}  // namespace qufop::gate
