#include "gate/server.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <time.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <optional>
#include <thread>
#include <unordered_set>

#include "common/auth.h"
#include "common/json.h"
#include "common/metrics.h"
#include "common/replay.h"
#include "gate/access.h"
#include "gate/http_scan.h"
#include "gate/limits.h"

namespace qufop::gate {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// Typed executors throughout: no any_io_executor type erasure on every operation.
using Exec = net::io_context::executor_type;
template <typename T>
using Task = net::awaitable<T, Exec>;
using Stream = beast::basic_stream<tcp, Exec>;
using Socket = net::basic_stream_socket<tcp, Exec>;
using Timer = net::basic_waitable_timer<Clock, net::wait_traits<Clock>, Exec>;
using Acceptor = net::basic_socket_acceptor<tcp, Exec>;
using Resolver = net::ip::basic_resolver<tcp, Exec>;
constexpr auto kTuple = net::as_tuple(net::use_awaitable_t<Exec>{});
constexpr size_t kRelayBytes = 16u << 10;
// Request bodies up to this size are read whole before forwarding (see route()).
constexpr size_t kInMemoryBodyBytes = 64u << 10;
constexpr size_t kPoolPerAddress = 256;
constexpr int64_t kPoolIdleMs = 30'000;
constexpr int64_t kPeekAfterMs = 1'000;
constexpr size_t kMaxResponseHeader = 64u << 10;
// The fast path holds a whole request (head + body) and a whole response in memory up to this.
constexpr size_t kFastBytes = 64u << 10;
constexpr size_t kReadChunk = 16u << 10;
// Deadlines of raw socket operations are checked by one sweep per worker at this period instead
// of a timer per operation.
constexpr auto kSweepPeriod = 100ms;
// The X-Qiniu-Date window of signed requests (DESIGN.md "Wire protocol"), as the scheduler's.
constexpr auto kSignatureWindow = std::chrono::minutes(15);
// 499: the client closed the connection before its answer (nginx's code); nothing is sent.
constexpr int kClientClosed = 499;

// Deadlines only need the sweep's resolution: the coarse clock is a plain memory read.
int64_t steady_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::chrono::milliseconds ms(int64_t v) { return std::chrono::milliseconds(v); }

struct Upstream {
  explicit Upstream(net::io_context& ioc) : stream(ioc.get_executor()) {}
  Stream stream;
  beast::flat_buffer buffer;
  int64_t idle_since_ms = 0;
};
using UpstreamPtr = std::unique_ptr<Upstream>;

struct Session;

// One thread's world: its io_context, its copy of the routing table, its upstream pools.
struct Worker {
  explicit Worker(int i) : ioc(1), index(i), rng(0x5eed0000ull + static_cast<uint64_t>(i)) {}
  net::io_context ioc;
  int index;
  Rng rng;
  std::shared_ptr<const Snapshot> snap;
  uint64_t generation = UINT64_MAX;
  StringMap<std::vector<UpstreamPtr>> pools;  // by instance address
  std::unordered_set<Session*> sessions;
  bool stopping = false;
  // Every answer by status (qufop_http_requests_total, as every daemon has): per worker, so
  // counting never shares a cache line between threads.
  std::array<std::atomic<uint64_t>, 500> answered{};
  std::atomic<uint64_t> fast{0};  // requests the fast path served
  void count(int status) {
    if (status >= 100 && status < 600)
      answered[status - 100].fetch_add(1, std::memory_order_relaxed);
  }

  const Snapshot& snapshot(const Table& table) {
    uint64_t g = table.generation();
    if (g != generation) {
      snap = table.current();
      generation = g;
    }
    return *snap;
  }
};

// A queued request's wake-up: the queue cancels its timer (on the waiter's own thread), and so
// does a hang-up of its client (Session::watch_client).
struct AsioWaiter : Waiter {
  explicit AsioWaiter(net::io_context& ioc) : timer(ioc.get_executor()) {}
  Timer timer;
  bool watching = false;   // the client's socket is watched (the waiter's thread only)
  bool abandoned = false;  // the client left while queued
  void abandon() {
    abandoned = true;
    timer.cancel();
  }
};

// True when the client closed or reset its connection. A half-close counts (as in nginx: a
// client that stops sending usually stopped waiting too); bytes it sent before do not hide it
// (POLLRDHUP).
bool client_gone(int fd) {
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

ClientLimiter::Address address_key(const net::ip::address& a) {
  if (a.is_v6()) return a.to_v6().to_bytes();
  return net::ip::make_address_v6(net::ip::v4_mapped, a.to_v4()).to_bytes();
}

using RequestParser = bhttp::request_parser<bhttp::buffer_body>;

// What forwarding one request to one instance came to.
struct Forwarded {
  enum Fate { kDone, kRetry, kFailed } fate = kDone;
  int status = 0;
  bool keep = false;      // the client connection may carry another request
  bool reusable = false;  // the upstream connection may carry another request
};

struct Outcome {
  int status = 0;
  bool keep = false;
};

// What admission came to: a claimed instance slot, or a refusal to answer with.
struct Admission {
  Admission() = default;
  Admission(int status, std::string code, std::string message, int retry_after = -1)
      : status(status),
        code(std::move(code)),
        message(std::move(message)),
        retry_after(retry_after) {}
  Admission(Admission&& o) noexcept
      : inst(std::move(o.inst)),
        status(o.status),
        code(std::move(o.code)),
        message(std::move(o.message)),
        retry_after(o.retry_after),
        entered(std::exchange(o.entered, nullptr)) {}
  Admission& operator=(Admission&&) = delete;
  ~Admission() {
    if (entered) entered->leave();
  }

  InstancePtr inst;  // null: refused
  int status = 0;
  std::string code;
  std::string message;
  int retry_after = -1;
  UfopQueue* entered = nullptr;  // counted against --command-concurrency until destroyed
};

// Was the fast path able to take the request?
enum class Fast { kServed, kFallback, kClosed };

// "cmd=<ufop>/<params>" with what would end or alter a query value escaped; the path is passed
// as it came (still percent-encoded), so the instance's one decoding gives the decoded path.
void append_cmd(std::string& out, std::string_view path) {
  out += "cmd=";
  for (char c : path) {
    switch (c) {
      case '&':
        out += "%26";
        break;
      case '+':
        out += "%2B";
        break;
      case '=':
        out += "%3D";
        break;
      case '#':
        out += "%23";
        break;
      case ' ':
        out += "%20";
        break;
      default:
        out += c;
    }
  }
}

bool body_is_signed(std::string_view content_type) {
  auto media = content_type.substr(0, content_type.find(';'));
  while (!media.empty() && media.back() == ' ') media.remove_suffix(1);
  while (!media.empty() && media.front() == ' ') media.remove_prefix(1);
  return beast::iequals(media, "application/json") ||
         beast::iequals(media, "application/x-www-form-urlencoded");
}

}  // namespace

struct Server::Impl {
  Impl(Options o, std::shared_ptr<Table> t, Metrics& m)
      : options(std::move(o)),
        table(std::move(t)),
        metrics(m),
        anon(options.anon_rate, options.anon_burst, options.anon_clients),
        replay(kSignatureWindow, options.replay_cache) {
    for (int i = 0; i < options.threads; ++i) workers.push_back(std::make_unique<Worker>(i));
  }

  void begin_stop();
  void finish_stop(Clock::time_point deadline);
  Task<void> accept_loop();
  Task<void> drain_loop();
  Task<void> prune_loop(Worker& w);
  Task<void> sweep_loop(Worker& w);

  Options options;
  std::shared_ptr<Table> table;
  Metrics& metrics;
  ClientLimiter anon;        // --anon-rate, by client address
  auth::ReplayGuard replay;  // signatures accepted within the date window
  std::vector<std::unique_ptr<Worker>> workers;
  std::optional<Acceptor> acceptor;
  std::optional<Timer> stop_timer;
  std::atomic<size_t> open{0};
  std::atomic<bool> stopping{false};
  size_t next_worker = 0;
};

namespace {

// The gate's own series in the Prometheus text format.
std::string render_gate_metrics(const Server::Impl& s) {
  auto snap = s.table->current();
  std::string queue, abandoned, in_flight, instances, requests, histogram;
  for (const auto& [name, route] : snap->ufops) {
    std::string label = "{ufop=\"" + name + "\"}";
    queue += "qufop_gate_queue_length" + label + " " + std::to_string(route.queue->queued()) + "\n";
    abandoned += "qufop_gate_queue_abandoned_total" + label + " " +
                 std::to_string(route.queue->stats().abandoned()) + "\n";
    in_flight +=
        "qufop_gate_in_flight" + label + " " + std::to_string(route.queue->in_flight()) + "\n";
    instances +=
        "qufop_gate_instances" + label + " " + std::to_string(route.members->size()) + "\n";
    route.queue->stats().render(name, requests, histogram);
  }
  std::string answered;
  for (int code = 100; code < 600; ++code) {
    uint64_t n = 0;
    for (const auto& w : s.workers) n += w->answered[code - 100].load(std::memory_order_relaxed);
    if (n)
      answered += "qufop_http_requests_total{code=\"" + std::to_string(code) + "\"} " +
                  std::to_string(n) + "\n";
  }
  uint64_t fast = 0;
  for (const auto& w : s.workers) fast += w->fast.load(std::memory_order_relaxed);
  std::string out;
  auto family = [&out](const char* name, const char* type, const char* help,
                       const std::string& series) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    out += series;
  };
  family("qufop_http_requests_total", "counter", "HTTP answers by status code.", answered);
  family("qufop_gate_fast_requests_total", "counter",
         "Requests served by the fast path (the gate's own head scanner), not Beast.",
         "qufop_gate_fast_requests_total " + std::to_string(fast) + "\n");
  family("qufop_gate_connections", "gauge", "Open client connections.",
         "qufop_gate_connections " + std::to_string(s.open.load()) + "\n");
  family("qufop_gate_queue_length", "gauge", "Requests waiting for a free instance slot.", queue);
  family("qufop_gate_queue_abandoned_total", "counter",
         "Queued requests dropped because their client closed the connection.", abandoned);
  family("qufop_gate_in_flight", "gauge", "Requests being served by instances.", in_flight);
  family("qufop_gate_instances", "gauge", "Routable instances (running, not stopping).", instances);
  family("qufop_gate_requests_total", "counter", "Requests answered, by status code.", requests);
  family("qufop_gate_request_duration_seconds", "histogram",
         "Time from the request head to the end of the response, queueing included.", histogram);
  family("qufop_gate_anon_limited_total", "counter",
         "Unsigned requests refused (429) by the per-address rate (--anon-rate).",
         "qufop_gate_anon_limited_total " + std::to_string(s.anon.refused()) + "\n");
  family("qufop_gate_anon_clients", "gauge", "Client addresses tracked for --anon-rate.",
         "qufop_gate_anon_clients " + std::to_string(s.anon.tracked()) + "\n");
  family("qufop_gate_replays_refused_total", "counter",
         "Signed requests refused (401) because their signature was already accepted.",
         "qufop_gate_replays_refused_total " + std::to_string(s.replay.refused()) + "\n");
  family("qufop_gate_replay_signatures", "gauge",
         "Signatures remembered to refuse replays (--replay-cache bounds it).",
         "qufop_gate_replay_signatures " + std::to_string(s.replay.size()) + "\n");
  family("qufop_gate_replay_evicted_total", "counter",
         "Signatures forgotten before their date left the window, at --replay-cache.",
         "qufop_gate_replay_evicted_total " + std::to_string(s.replay.evicted()) + "\n");
  return out;
}

// One client connection: requests one after another (keep-alive), each admitted, queued and
// forwarded in turn.
struct Session {
  Session(Server::Impl& s, Worker& w, Socket sock, const ClientLimiter::Address& peer)
      : server(s), o(s.options), worker(w), client(std::move(sock)), peer(peer) {
    worker.sessions.insert(this);
  }
  ~Session() { worker.sessions.erase(this); }

  Task<void> run();
  Task<Outcome> handle(RequestParser& p);
  Task<Outcome> route(RequestParser& p, const Snapshot& snap, const Route& r, std::string_view path,
                      std::string_view query);
  Result<const User*> verify_caller(const Snapshot& snap, std::string_view authorization,
                                    const auth::SignableRequest& sr);
  Task<Admission> admit(const Snapshot& snap, const Route& r, const User* caller);
  template <typename Once>
  Task<Forwarded> deliver(const Route& r, InstancePtr inst, Once& once, std::string& unreachable);
  Task<std::pair<InstancePtr, int>> wait_in_queue(UfopQueue& q, size_t bound,
                                                  Clock::time_point deadline);
  void watch_client(std::shared_ptr<AsioWaiter> w);
  Task<UpstreamPtr> connect(Instance& inst);
  Task<Forwarded> forward(RequestParser& p, Instance& inst, const std::string* body);

  // The fast path (http_scan): the common request whole in `buffer`, the response whole in the
  // upstream's buffer; kFallback leaves `buffer` as it was for the Beast parser.
  Task<Fast> serve_fast(Outcome& out);
  Task<Outcome> route_fast(const Snapshot& snap, const Route& r, std::string_view path,
                           std::string_view query, std::string_view body);
  Task<Forwarded> forward_fast(Instance& inst, std::string_view body, bool client_keep);
  Task<Forwarded> relay_with_beast(UpstreamPtr up, const std::string& address, bool client_keep);

  // A raw socket operation's deadline, enforced by the worker's sweep (cancel -> timed_out).
  void arm(Socket& s, int64_t timeout_ms) { arm_until(s, steady_ms() + timeout_ms); }
  void arm_until(Socket& s, int64_t deadline) {
    waiting = &s;
    timed_out = false;
    deadline_ms = deadline;
  }
  void disarm() { waiting = nullptr; }
  Task<Forwarded> relay_response(Upstream& up, bhttp::response_parser<bhttp::buffer_body>& rp,
                                 unsigned version, bool client_keep);
  Task<bool> reply(int status, std::string_view code, std::string_view message, bool keep,
                   unsigned version, int retry_after = -1);
  Task<bool> reply_raw(int status, std::string content_type, std::string body, bool keep,
                       unsigned version);
  Task<Result<std::string>> read_whole_body(RequestParser& p, size_t limit);

  UpstreamPtr take_pooled(const std::string& address, bool always_peek);
  void give_back(const std::string& address, UpstreamPtr up);
  char* relay_buffer() {
    if (!relay) relay = std::make_unique<char[]>(kRelayBytes);
    return relay.get();
  }

  Server::Impl& server;
  const Options& o;
  Worker& worker;
  Stream client;
  const ClientLimiter::Address peer;  // the client's address (--anon-rate)
  beast::flat_buffer buffer;
  std::unique_ptr<char[]> relay;
  bool idle = false;
  Socket* waiting = nullptr;  // under a deadline (arm)
  int64_t deadline_ms = 0;
  bool timed_out = false;
  AsioWaiter* polled = nullptr;  // queued with bytes unread in the socket: the sweep polls it
  scan::Request sreq;            // the fast path's request head (points into `buffer`)
  std::string upstream_head;     // the fast path's rewritten request head
  std::string client_head;       // the fast path's response head
};

Task<void> Session::run() {
  beast::error_code ignored;
  client.socket().set_option(tcp::no_delay(true), ignored);
  while (!worker.stopping) {
    if (o.fast_path) {
      Outcome out;
      Fast fate = co_await serve_fast(out);
      if (fate == Fast::kClosed) co_return;
      if (fate == Fast::kServed) {
        worker.count(out.status);
        worker.fast.fetch_add(1, std::memory_order_relaxed);
        if (!out.keep) co_return;
        continue;
      }
    }
    RequestParser p;
    p.header_limit(static_cast<uint32_t>(o.max_header_bytes));
    p.body_limit(o.max_body_bytes);
    idle = buffer.size() == 0;
    client.expires_after(ms(o.client_timeout_ms));
    auto [ec, n] = co_await bhttp::async_read_header(client, buffer, p, kTuple);
    idle = false;
    if (ec) {
      if (ec == bhttp::error::header_limit) {
        co_await reply(431, "header_too_large", "request header over the limit", false, 11);
      } else if (ec == bhttp::error::body_limit) {
        co_await reply(413, "body_too_large", "request body over --max-body", false, 11);
      } else if (ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category() &&
                 ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message) {
        co_await reply(400, "bad_request", "malformed request: " + ec.message(), false, 11);
      }
      co_return;
    }
    auto out = co_await handle(p);
    worker.count(out.status);
    if (!out.keep) co_return;
  }
}

Task<Outcome> Session::handle(RequestParser& p) {
  auto& req = p.get();
  const unsigned version = req.version();
  std::string_view target(req.target().data(), req.target().size());
  size_t qpos = target.find('?');
  std::string_view path = target.substr(0, qpos);
  std::string_view query = qpos == std::string_view::npos ? "" : target.substr(qpos + 1);
  // A reply before the body was read leaves it on the wire: the connection cannot go on.
  auto keep = [&] { return req.keep_alive() && p.is_done(); };

  if (path == "/healthz" || path == "/metrics") {
    bool k = keep();
    if (req.method() != bhttp::verb::get) {
      co_return Outcome{405, co_await reply(405, "method_not_allowed", "use GET", k, version)};
    }
    if (path == "/healthz") {
      co_return Outcome{
          200, co_await reply_raw(200, "application/json", R"({"status":"ok"})", k, version)};
    }
    auto text = server.metrics.render();
    co_return Outcome{200, co_await reply_raw(200, "text/plain; version=0.0.4",
                                              text + render_gate_metrics(server), k, version)};
  }
  if (path.size() < 2 || path[0] != '/') {
    co_return Outcome{
        400, co_await reply(400, "bad_request", "expected /<ufop>/<params>", keep(), version)};
  }
  if (req.method() != bhttp::verb::get && req.method() != bhttp::verb::post) {
    co_return Outcome{
        405, co_await reply(405, "method_not_allowed", "use GET or POST", keep(), version)};
  }
  std::string_view name =
      path.substr(1, path.find('/', 1) == std::string_view::npos ? std::string_view::npos
                                                                 : path.find('/', 1) - 1);
  const Snapshot& snap = worker.snapshot(*server.table);
  auto it = snap.ufops.find(name);
  if (it == snap.ufops.end()) {
    co_return Outcome{
        404, co_await reply(404, "not_found", "no UFOP named '" + std::string(name) + "'", keep(),
                            version)};
  }
  // The snapshot may be replaced while this request waits: hold on to it.
  auto hold = worker.snap;
  const Route& route = it->second;
  auto start = Clock::now();
  Outcome out = co_await this->route(p, *hold, route, path, query);
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
  route.queue->stats().record(out.status, micros.count());
  co_return out;
}

Task<Result<std::string>> Session::read_whole_body(RequestParser& p, size_t limit) {
  std::string body;
  char* buf = relay_buffer();
  auto& req = p.get();
  while (!p.is_done()) {
    req.body().data = buf;
    req.body().size = kRelayBytes;
    client.expires_after(ms(o.client_timeout_ms));
    auto [ec, n] = co_await bhttp::async_read(client, buffer, p, kTuple);
    if (ec == bhttp::error::need_buffer) ec = {};
    if (ec) co_return Error::io("reading the request body: " + ec.message());
    body.append(buf, kRelayBytes - req.body().size);
    if (body.size() > limit) co_return Error{"too_large", "signed body over the limit", 0};
  }
  co_return body;
}

Result<const User*> Session::verify_caller(const Snapshot& snap, std::string_view authorization,
                                           const auth::SignableRequest& sr) {
  auth::Verifier verifier(
      [&snap](std::string_view ak) -> std::optional<std::string> {
        auto u = snap.users.find(ak);
        if (u == snap.users.end()) return std::nullopt;
        return u->second.secret_key;
      },
      kSignatureWindow);
  const auto now = std::chrono::system_clock::now();
  auto verified = verifier.verify_full(authorization, sr, now);
  if (!verified) return verified.error();
  // Accepted once: the same signed request again within the window, however its header is
  // spelled, is a replay.
  if (!server.replay.first_use(*verified, now)) {
    return Error{"unauthorized",
                 "replayed request: this signature was already accepted; sign every request "
                 "afresh (a new X-Qiniu-Nonce)",
                 0};
  }
  return &snap.users.find(verified->access_key)->second;
}

// Access, limits and a slot on an instance (at once or after a wait in the UFOP's queue).
Task<Admission> Session::admit(const Snapshot& snap, const Route& r, const User* caller) {
  switch (check_access(snap, r, caller)) {
    case Access::kAllow:
      break;
    case Access::kUnauthenticated:
      co_return Admission(401, "unauthorized", "UFOP '" + r.name + "' needs a signed request");
    case Access::kForbidden:
      co_return Admission(403, "forbidden",
                          "access key " + caller->access_key + " may not call '" + r.name + "'");
  }
  // Limits: the caller's rate (an unsigned one's by its address), then the UFOP's admitted
  // requests.
  int64_t now = wall_ms();
  if (caller && !caller->bucket->take(now)) {
    int64_t wait = caller->bucket->wait_ms(now);
    co_return Admission(429, "rate_limited",
                        "over the request rate of access key " + caller->access_key,
                        static_cast<int>(std::max<int64_t>(1, (wait + 999) / 1000)));
  }
  if (!caller && server.anon.enabled()) {
    if (int64_t wait = server.anon.take(peer, steady_ms())) {
      co_return Admission(429, "rate_limited",
                          "over the request rate of unsigned calls from one address "
                          "(--anon-rate); signed requests have their own limit",
                          static_cast<int>((wait + 999) / 1000));
    }
  }
  UfopQueue& q = *r.queue;
  if (!q.enter(o.command_concurrency)) {
    co_return Admission(503, "busy",
                        "UFOP '" + r.name + "' has " + std::to_string(o.command_concurrency) +
                            " requests in progress (--command-concurrency)",
                        1);
  }
  Admission a;
  a.entered = &q;
  const Members& members = *r.members;
  if (!any_routable(members, now)) {
    co_return Admission(503, "unavailable", "no healthy instance of '" + r.name + "'", 1);
  }
  a.inst = q.try_claim(members, now, worker.rng);
  if (a.inst) co_return a;
  size_t bound = caller && caller->paid ? o.queue_paid : o.queue_free;
  auto [got, status] = co_await wait_in_queue(q, bound, Clock::now() + ms(o.queue_timeout_ms));
  if (status == 503) {
    co_return Admission(503, "queue_full", "the queue of '" + r.name + "' is full", 1);
  }
  if (status == kClientClosed) {
    co_return Admission(kClientClosed, "client_closed", "the client left while queued");
  }
  if (status == 504) {
    co_return Admission(504, "queue_timeout",
                        "no instance of '" + r.name + "' was free within --queue-timeout");
  }
  a.inst = std::move(got);
  co_return a;
}

// Forwards with `once(instance)`; a request that reached no instance is tried once more on
// another one. `unreachable` names the instance when that failed too (f.fate == kRetry).
template <typename Once>
Task<Forwarded> Session::deliver(const Route& r, InstancePtr inst, Once& once,
                                 std::string& unreachable) {
  UfopQueue& q = *r.queue;
  Forwarded f;
  for (int attempt = 0;; ++attempt) {
    f = co_await once(*inst);
    if (f.fate == Forwarded::kDone) {
      inst->record_success();
    } else {
      inst->record_failure(wall_ms(), o.eject_after, o.eject_for_ms);
    }
    q.release(*inst, wall_ms(), worker.rng);
    if (f.fate != Forwarded::kRetry) co_return f;
    // Nothing reached the instance: once more, on another one if any has room.
    Instance* failed = inst.get();
    inst = attempt == 0 ? q.claim_other(*r.members, wall_ms(), worker.rng, failed) : nullptr;
    if (!inst) {
      unreachable = failed->address;
      co_return f;
    }
  }
}

// The answer to a request that forwarding could not complete, if any.
std::optional<Admission> delivery_error(const Forwarded& f, const Route& r,
                                        const std::string& unreachable) {
  if (f.fate == Forwarded::kRetry) {
    return Admission(502, "bad_gateway",
                     "cannot reach an instance of '" + r.name + "' (" + unreachable + ")");
  }
  if (f.status == 504) {
    return Admission(504, "upstream_timeout",
                     "the instance of '" + r.name + "' did not answer in time");
  }
  if (f.status == 502) {
    return Admission(502, "bad_gateway", "the instance of '" + r.name + "' failed");
  }
  return std::nullopt;
}

Task<Outcome> Session::route(RequestParser& p, const Snapshot& snap, const Route& r,
                             std::string_view path, std::string_view query) {
  auto& req = p.get();
  const unsigned version = req.version();
  const bool client_keep = req.keep_alive();
  auto keep = [&] { return client_keep && p.is_done(); };
  auto fail = [&](int status, std::string_view code, std::string message,
                  int retry_after = -1) -> Task<Outcome> {
    co_return Outcome{status, co_await reply(status, code, message, keep(), version, retry_after)};
  };

  // The caller's key (a signed JSON or form body is read whole: it is part of the signature).
  const User* caller = nullptr;
  std::optional<std::string> whole_body;
  auto authorization = req[bhttp::field::authorization];
  if (!authorization.empty()) {
    std::string content_type(req[bhttp::field::content_type]);
    if (body_is_signed(content_type) && !p.is_done()) {
      auto body = co_await read_whole_body(p, o.max_signed_body_bytes);
      if (!body && body.error().code == "too_large") {
        co_return co_await fail(413, "body_too_large",
                                "a signed JSON or form body is limited to " +
                                    std::to_string(o.max_signed_body_bytes) + " bytes");
      }
      if (!body) co_return Outcome{400, false};
      whole_body = std::move(*body);
    }
    auth::SignableRequest sr{
        std::string(req.method_string()),        std::string(path), std::string(query),
        std::string(req[bhttp::field::host]),    content_type,      {},
        whole_body ? *whole_body : std::string()};
    for (const auto& f : req) sr.headers.emplace_back(f.name_string(), f.value());
    auto who = verify_caller(snap, authorization, sr);
    if (!who) co_return co_await fail(401, "unauthorized", who.error().message);
    caller = *who;
  }
  // A small body is read whole too, before an instance is taken: kept in memory it can be sent
  // again when the pooled connection turns out to have been closed by the instance as we wrote
  // (streamed, it would be half consumed by then and the caller would get a 502).
  if (!whole_body && !p.is_done() && p.content_length() &&
      *p.content_length() <= kInMemoryBodyBytes) {
    auto body = co_await read_whole_body(p, kInMemoryBodyBytes);
    if (!body) co_return Outcome{400, false};
    whole_body = std::move(*body);
  }
  Admission a = co_await admit(snap, r, caller);
  if (a.status == kClientClosed) co_return Outcome{kClientClosed, false};  // no one to answer
  if (!a.inst) co_return co_await fail(a.status, a.code, a.message, a.retry_after);

  // The instance's request: POST /handler?cmd=<ufop>/<params>&<the caller's query>.
  std::string target = "/handler?";
  target.reserve(path.size() + query.size() + 16);
  append_cmd(target, path.substr(1));
  if (!query.empty()) {
    target += '&';
    target += query;
  }
  req.method(bhttp::verb::post);
  req.target(target);

  auto once = [&](Instance& inst) { return forward(p, inst, whole_body ? &*whole_body : nullptr); };
  std::string unreachable;
  Forwarded f = co_await deliver(r, std::move(a.inst), once, unreachable);
  if (auto e = delivery_error(f, r, unreachable))
    co_return co_await fail(e->status, e->code, e->message);
  co_return Outcome{f.status, f.keep};
}

Task<std::pair<InstancePtr, int>> Session::wait_in_queue(UfopQueue& q, size_t bound,
                                                         Clock::time_point deadline) {
  auto w = std::make_shared<AsioWaiter>(worker.ioc);
  w->timer.expires_at(deadline);
  net::io_context* ioc = &worker.ioc;
  w->wake = [ioc](const std::shared_ptr<Waiter>& self) {
    net::post(*ioc, [self] { static_cast<AsioWaiter&>(*self).timer.cancel(); });
  };
  switch (q.enqueue(w, bound, wall_ms(), worker.rng)) {
    case UfopQueue::Enqueued::kFull:
      co_return std::pair{nullptr, 503};
    case UfopQueue::Enqueued::kGranted:
      co_return std::pair{std::move(w->granted), 0};
    case UfopQueue::Enqueued::kWaiting:
      break;
  }
  // A client that leaves while queued must not take a slot later: watch its socket meanwhile.
  w->watching = true;
  watch_client(w);
  co_await w->timer.async_wait(kTuple);
  w->watching = false;
  polled = nullptr;
  beast::error_code ignored;
  client.socket().cancel(ignored);  // the watch, if still pending
  InstancePtr got = q.cancel(w);
  if (w->abandoned) {
    if (got) q.release(*got, wall_ms(), worker.rng);  // granted meanwhile: to the next one
    q.stats().record_abandoned();
    co_return std::pair{nullptr, kClientClosed};
  }
  if (!got) co_return std::pair{nullptr, 504};
  co_return std::pair{std::move(got), 0};
}

// Watches a queued request's client through the worker's event loop. The wait wakes on the
// socket's next event, and at once when something is already there (Asio re-arms epoll for it):
// a FIN or RST ends the wait as abandoned. Bytes (a pipelined request, a body not read yet) stay
// in the socket for later, and would wake the wait again and again: from then on the worker's
// sweep polls for a hang-up instead (every 100 ms).
void Session::watch_client(std::shared_ptr<AsioWaiter> w) {
  client.socket().async_wait(Socket::wait_read, [this, w](beast::error_code ec) {
    if (ec || !w->watching) return;  // the wait ended: this session may be gone
    if (client_gone(client.socket().native_handle())) {
      w->abandon();
    } else {
      polled = w.get();
    }
  });
}

UpstreamPtr Session::take_pooled(const std::string& address, bool always_peek) {
  auto it = worker.pools.find(address);
  if (it == worker.pools.end()) return nullptr;
  auto& pool = it->second;
  int64_t now = wall_ms();
  while (!pool.empty()) {
    UpstreamPtr up = std::move(pool.back());
    pool.pop_back();
    if (now - up->idle_since_ms > kPoolIdleMs) continue;
    // Under load a connection comes back within microseconds; one idle for a while may have
    // been closed by the instance (EOF or stray bytes): check before sending on it.
    if (!always_peek && now - up->idle_since_ms < kPeekAfterMs) return up;
    char c;
    ssize_t r = ::recv(up->stream.socket().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return up;
  }
  return nullptr;
}

void Session::give_back(const std::string& address, UpstreamPtr up) {
  auto& pool = worker.pools[address];
  if (pool.size() >= kPoolPerAddress || up->buffer.size() != 0) return;
  up->idle_since_ms = wall_ms();
  up->stream.expires_never();
  pool.push_back(std::move(up));
}

// A fresh connection to `inst`; null when it cannot be made.
Task<UpstreamPtr> Session::connect(Instance& inst) {
  auto up = std::make_unique<Upstream>(worker.ioc);
  beast::error_code ec;
  auto address = net::ip::make_address(inst.host, ec);
  tcp::endpoint ep;
  if (!ec) {
    ep = tcp::endpoint(address, inst.port);
  } else {  // a host name: resolve (new connections only)
    Resolver resolver(worker.ioc.get_executor());
    auto [rec, results] =
        co_await resolver.async_resolve(inst.host, std::to_string(inst.port), kTuple);
    if (rec || results.empty()) co_return nullptr;
    ep = *results.begin();
  }
  up->stream.expires_after(ms(o.connect_timeout_ms));
  auto [cec] = co_await up->stream.async_connect(ep, kTuple);
  if (cec) co_return nullptr;
  up->stream.expires_never();
  up->stream.socket().set_option(tcp::no_delay(true), ec);
  co_return up;
}

Task<Forwarded> Session::forward(RequestParser& p, Instance& inst, const std::string* body) {
  auto& req = p.get();
  const unsigned version = req.version();
  const bool client_keep = req.keep_alive();
  req.version(11);
  req.erase(bhttp::field::connection);  // hop-by-hop: its tokens were for this hop only
  req.keep_alive(true);
  req.erase("Keep-Alive");
  req.erase("Proxy-Connection");
  req.erase(bhttp::field::upgrade);
  req.erase(bhttp::field::te);
  if (!req.has_content_length() && !req.chunked()) req.content_length(0);
  bool body_started = false;  // some of a streamed body was consumed: no retry after that

  // A body streamed from the client cannot be sent twice: make sure a pooled connection is
  // still open before using it (the retry below covers what is in memory).
  UpstreamPtr up = take_pooled(inst.address, !p.is_done() && !body);
  bool reused = up != nullptr;
  for (;;) {
    if (!up) {
      up = co_await connect(inst);
      if (!up) co_return Forwarded{Forwarded::kRetry, 502, false};
    }
    // The head (and a body already at hand).
    bhttp::serializer<true, bhttp::buffer_body> sr{req};
    if (body) {
      req.body().data = const_cast<char*>(body->data());
      req.body().size = body->size();
      req.body().more = false;
    } else {
      req.body().data = nullptr;
      req.body().size = 0;
      req.body().more = !p.is_done();
    }
    up->stream.expires_after(ms(o.upstream_timeout_ms));
    auto [wec, wn] = co_await bhttp::async_write(up->stream, sr, kTuple);
    if (wec == bhttp::error::need_buffer) wec = {};
    if (wec) {
      if (reused) {  // a stale pooled connection: a fresh one
        up.reset();
        reused = false;
        continue;
      }
      co_return Forwarded{Forwarded::kRetry, 502, false};
    }
    // A streamed body, piece by piece.
    while (!p.is_done()) {
      body_started = true;
      char* buf = relay_buffer();
      req.body().data = buf;
      req.body().size = kRelayBytes;
      client.expires_after(ms(o.client_timeout_ms));
      auto [rec, rn] = co_await bhttp::async_read(client, buffer, p, kTuple);
      if (rec == bhttp::error::need_buffer) rec = {};
      if (rec) {
        int status = rec == bhttp::error::body_limit ? 413 : 400;
        // The client's fault: answer it if it still listens, and spare the instance's record.
        co_await reply(status, status == 413 ? "body_too_large" : "bad_request",
                       "reading the request body: " + rec.message(), false, version);
        co_return Forwarded{Forwarded::kDone, status, false};
      }
      req.body().size = kRelayBytes - req.body().size;
      req.body().data = buf;
      req.body().more = !p.is_done();
      up->stream.expires_after(ms(o.upstream_timeout_ms));
      auto [bec, bn] = co_await bhttp::async_write(up->stream, sr, kTuple);
      if (bec == bhttp::error::need_buffer) bec = {};
      if (bec) co_return Forwarded{Forwarded::kFailed, 502, false};
    }
    // The response head.
    bhttp::response_parser<bhttp::buffer_body> rp;
    rp.header_limit(kMaxResponseHeader);
    rp.body_limit(boost::none);
    up->stream.expires_after(ms(o.upstream_timeout_ms));
    auto [hec, hn] = co_await bhttp::async_read_header(up->stream, up->buffer, rp, kTuple);
    if (hec == beast::error::timeout) co_return Forwarded{Forwarded::kFailed, 504, false};
    if (hec) {
      bool nothing_back = up->buffer.size() == 0 && hn == 0;
      if (reused && nothing_back && !body_started) {
        up.reset();  // the instance closed the idle connection as we sent: a fresh one
        reused = false;
        continue;
      }
      co_return Forwarded{Forwarded::kFailed, 502, false};
    }
    auto f = co_await relay_response(*up, rp, version, client_keep);
    if (f.fate == Forwarded::kDone && rp.is_done() && f.reusable) {
      give_back(inst.address, std::move(up));
    }
    co_return f;
  }
}

Task<Forwarded> Session::relay_response(Upstream& up,
                                        bhttp::response_parser<bhttp::buffer_body>& rp,
                                        unsigned version, bool client_keep) {
  auto& res = rp.get();
  int status = res.result_int();
  bool keep = client_keep;
  // The instance's own Connection semantics, before the client's replace them.
  const bool upstream_keep = res.keep_alive();
  bool has_body = !(status / 100 == 1 || status == 204 || status == 304);
  bool framed = rp.chunked() || rp.content_length().has_value();
  if (has_body && !framed) {  // delimited by the instance closing: re-frame for the client
    if (version >= 11) {
      res.chunked(true);
    } else {
      keep = false;
    }
  }
  if (version < 11 && rp.chunked()) {
    res.chunked(false);
    keep = false;
  }
  res.version(version);
  res.erase(bhttp::field::connection);  // hop-by-hop: the instance's, not the client's
  res.keep_alive(keep);
  res.erase("Keep-Alive");
  bhttp::serializer<false, bhttp::buffer_body> sr{res};
  res.body().data = nullptr;
  res.body().size = 0;
  res.body().more = !rp.is_done();
  client.expires_after(ms(o.client_timeout_ms));
  auto [ec, n] = co_await bhttp::async_write(client, sr, kTuple);
  if (ec == bhttp::error::need_buffer) ec = {};
  if (ec) co_return Forwarded{Forwarded::kDone, status, false};  // the client left
  while (!rp.is_done()) {
    char* buf = relay_buffer();
    res.body().data = buf;
    res.body().size = kRelayBytes;
    up.stream.expires_after(ms(o.upstream_timeout_ms));
    auto [rec, rn] = co_await bhttp::async_read(up.stream, up.buffer, rp, kTuple);
    if (rec == bhttp::error::need_buffer) rec = {};
    if (rec) co_return Forwarded{Forwarded::kFailed, status, false};  // headers are out: close
    res.body().size = kRelayBytes - res.body().size;
    res.body().data = buf;
    res.body().more = !rp.is_done();
    client.expires_after(ms(o.client_timeout_ms));
    auto [wec, wn] = co_await bhttp::async_write(client, sr, kTuple);
    if (wec == bhttp::error::need_buffer) wec = {};
    if (wec) co_return Forwarded{Forwarded::kDone, status, false};
  }
  co_return Forwarded{Forwarded::kDone, status, keep, upstream_keep};
}

// Reads until `buffer` holds a whole request the fast path takes (head and body), then serves
// it. kFallback: the request is left in `buffer`, untouched, for the Beast parser.
Task<Fast> Session::serve_fast(Outcome& out) {
  // One deadline for the whole head and body, as on the Beast path: a trickle does not renew it.
  const int64_t deadline = steady_ms() + o.client_timeout_ms;
  for (;;) {
    std::string_view in(static_cast<const char*>(buffer.data().data()), buffer.size());
    auto st = scan::scan_request(in, sreq);
    if (st == scan::Status::kOther) co_return Fast::kFallback;
    if (st == scan::Status::kComplete) {
      uint64_t whole = sreq.head_bytes + sreq.content_length;
      if (whole > kFastBytes) co_return Fast::kFallback;  // streamed by the Beast path
      if (whole <= in.size()) break;
    } else if (in.size() >= std::min(kFastBytes, o.max_header_bytes)) {
      co_return Fast::kFallback;  // the Beast parser answers 431
    }
    idle = in.empty();
    arm_until(client.socket(), deadline);
    auto [ec, n] = co_await client.socket().async_read_some(buffer.prepare(kReadChunk), kTuple);
    disarm();
    idle = false;
    // EOF, a reset, a timeout or a stop: nothing to answer (as on the Beast path).
    if (ec) co_return Fast::kClosed;
    buffer.commit(n);
  }
  std::string_view in(static_cast<const char*>(buffer.data().data()), buffer.size());
  std::string_view target = sreq.target;
  size_t qpos = target.find('?');
  std::string_view path = target.substr(0, qpos);
  std::string_view query = qpos == std::string_view::npos ? "" : target.substr(qpos + 1);
  // /healthz, /metrics, malformed paths and unknown UFOPs: the Beast path's answers.
  if (path.size() < 2 || path == "/healthz" || path == "/metrics") co_return Fast::kFallback;
  size_t slash = path.find('/', 1);
  std::string_view name = path.substr(1, slash == std::string_view::npos ? slash : slash - 1);
  const Snapshot& snap = worker.snapshot(*server.table);
  auto it = snap.ufops.find(name);
  if (it == snap.ufops.end()) co_return Fast::kFallback;
  std::string_view body = in.substr(sreq.head_bytes, sreq.content_length);
  // A signed JSON or form body over the limit: the Beast path answers 413.
  if (!sreq.authorization.empty() && body.size() > o.max_signed_body_bytes &&
      body_is_signed(sreq.content_type)) {
    co_return Fast::kFallback;
  }
  auto hold = worker.snap;  // the snapshot may be replaced while this request waits
  const Route& route = it->second;
  auto start = Clock::now();
  out = co_await route_fast(*hold, route, path, query, body);
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
  route.queue->stats().record(out.status, micros.count());
  buffer.consume(sreq.head_bytes + sreq.content_length);
  co_return Fast::kServed;
}

Task<Outcome> Session::route_fast(const Snapshot& snap, const Route& r, std::string_view path,
                                  std::string_view query, std::string_view body) {
  const bool client_keep = !sreq.close;
  const User* caller = nullptr;
  if (!sreq.authorization.empty()) {
    bool signs_body = body_is_signed(sreq.content_type);
    auth::SignableRequest sr{std::string(sreq.method),
                             std::string(path),
                             std::string(query),
                             std::string(sreq.host),
                             std::string(sreq.content_type),
                             {},
                             signs_body ? std::string(body) : std::string()};
    sr.headers.reserve(sreq.header_count);
    for (size_t i = 0; i < sreq.header_count; ++i) {
      sr.headers.emplace_back(sreq.headers[i].name, sreq.headers[i].value);
    }
    auto who = verify_caller(snap, sreq.authorization, sr);
    if (!who) {
      co_return Outcome{401,
                        co_await reply(401, "unauthorized", who.error().message, client_keep, 11)};
    }
    caller = *who;
  }
  Admission a = co_await admit(snap, r, caller);
  if (a.status == kClientClosed) co_return Outcome{kClientClosed, false};  // no one to answer
  if (!a.inst) {
    co_return Outcome{a.status,
                      co_await reply(a.status, a.code, a.message, client_keep, 11, a.retry_after)};
  }
  // The instance's head: POST /handler?cmd=<ufop>/<params>&<query>, the caller's fields but
  // the hop-by-hop ones, and a Content-Length (0 without a body).
  std::string& h = upstream_head;
  h.clear();
  h += "POST /handler?";
  append_cmd(h, path.substr(1));
  if (!query.empty()) {
    h += '&';
    h += query;
  }
  h += " HTTP/1.1\r\n";
  for (size_t i = 0; i < sreq.header_count; ++i) {
    if (!scan::is_hop_by_hop(sreq.headers[i].name)) scan::append_header(h, sreq.headers[i]);
  }
  if (!sreq.has_content_length) h += "Content-Length: 0\r\n";
  h += "\r\n";

  auto once = [&](Instance& inst) { return forward_fast(inst, body, client_keep); };
  std::string unreachable;
  Forwarded f = co_await deliver(r, std::move(a.inst), once, unreachable);
  if (auto e = delivery_error(f, r, unreachable)) {
    co_return Outcome{e->status, co_await reply(e->status, e->code, e->message, client_keep, 11)};
  }
  co_return Outcome{f.status, f.keep};
}

// Sends upstream_head + body and relays a response that fits in memory; a response that does
// not (chunked, close-delimited, large, HTTP/1.0) goes through the Beast relay from where the
// scan stopped. A request that met a closed pooled connection before any response byte is sent
// again on a fresh one: it is whole in memory.
Task<Forwarded> Session::forward_fast(Instance& inst, std::string_view body, bool client_keep) {
  UpstreamPtr up = take_pooled(inst.address, false);
  bool reused = up != nullptr;
  for (;;) {
    if (!up) {
      up = co_await connect(inst);
      if (!up) co_return Forwarded{Forwarded::kRetry, 502, false};
    }
    Socket& sock = up->stream.socket();
    std::array<net::const_buffer, 2> request{net::buffer(upstream_head), net::buffer(body)};
    arm(sock, o.upstream_timeout_ms);
    auto [wec, wn] = co_await net::async_write(sock, request, kTuple);
    disarm();
    if (wec) {
      if (reused && !timed_out) {  // a stale pooled connection: a fresh one
        up.reset();
        reused = false;
        continue;
      }
      co_return Forwarded{timed_out ? Forwarded::kFailed : Forwarded::kRetry, timed_out ? 504 : 502,
                          false};
    }
    // The response, whole.
    scan::Response res;
    size_t body_bytes = 0;
    bool stale = false;
    const int64_t deadline = steady_ms() + o.upstream_timeout_ms;  // for the whole response
    for (;;) {
      std::string_view in(static_cast<const char*>(up->buffer.data().data()), up->buffer.size());
      auto st = scan::scan_response(in, res);
      if (st == scan::Status::kOther)
        co_return co_await relay_with_beast(std::move(up), inst.address, client_keep);
      if (st == scan::Status::kComplete) {
        bool no_body = res.status == 204 || res.status == 304;
        if (!no_body && !res.has_content_length) {  // close-delimited: re-framed by Beast
          co_return co_await relay_with_beast(std::move(up), inst.address, client_keep);
        }
        body_bytes = no_body ? 0 : res.content_length;
        if (res.head_bytes + body_bytes > kFastBytes) {
          co_return co_await relay_with_beast(std::move(up), inst.address, client_keep);
        }
        if (res.head_bytes + body_bytes <= in.size()) break;
      } else if (in.size() >= kMaxResponseHeader) {
        co_return co_await relay_with_beast(std::move(up), inst.address,
                                            client_keep);  // Beast: too large
      }
      arm_until(sock, deadline);
      auto [rec, rn] = co_await sock.async_read_some(up->buffer.prepare(kReadChunk), kTuple);
      disarm();
      if (rec) {
        if (timed_out) co_return Forwarded{Forwarded::kFailed, 504, false};
        stale = reused && up->buffer.size() == 0;
        if (!stale) co_return Forwarded{Forwarded::kFailed, 502, false};
        break;
      }
      up->buffer.commit(rn);
    }
    if (stale) {  // the instance had closed the idle connection: nothing reached it
      up.reset();
      reused = false;
      continue;
    }
    // The client's head: the instance's status and fields but its hop-by-hop Connection and
    // Keep-Alive; this hop's own Connection.
    std::string& h = client_head;
    h.clear();
    h += "HTTP/1.1 ";
    h += std::to_string(res.status);
    h += ' ';
    h += res.reason;
    h += "\r\n";
    for (size_t i = 0; i < res.header_count; ++i) {
      auto name = res.headers[i].name;
      if (scan::iequals(name, "connection") || scan::iequals(name, "keep-alive")) continue;
      scan::append_header(h, res.headers[i]);
    }
    if (!client_keep) h += "Connection: close\r\n";
    h += "\r\n";
    const char* data = static_cast<const char*>(up->buffer.data().data());
    std::array<net::const_buffer, 2> response{net::buffer(h),
                                              net::buffer(data + res.head_bytes, body_bytes)};
    arm(client.socket(), o.client_timeout_ms);
    auto [cec, cn] = co_await net::async_write(client.socket(), response, kTuple);
    disarm();
    up->buffer.consume(res.head_bytes + body_bytes);
    // Upstream bytes beyond the response mean it cannot be trusted with another request.
    if (!res.close) give_back(inst.address, std::move(up));
    if (cec) co_return Forwarded{Forwarded::kDone, res.status, false};  // the client left
    co_return Forwarded{Forwarded::kDone, res.status, client_keep};
  }
}

// The Beast relay for responses the fast path does not hold whole; it parses from what the scan
// already read.
Task<Forwarded> Session::relay_with_beast(UpstreamPtr up, const std::string& address,
                                          bool client_keep) {
  bhttp::response_parser<bhttp::buffer_body> rp;
  rp.header_limit(kMaxResponseHeader);
  rp.body_limit(boost::none);
  up->stream.expires_after(ms(o.upstream_timeout_ms));
  auto [hec, hn] = co_await bhttp::async_read_header(up->stream, up->buffer, rp, kTuple);
  if (hec == beast::error::timeout) co_return Forwarded{Forwarded::kFailed, 504, false};
  if (hec) co_return Forwarded{Forwarded::kFailed, 502, false};
  auto f = co_await relay_response(*up, rp, 11, client_keep);
  if (f.fate == Forwarded::kDone && rp.is_done() && f.reusable) {
    give_back(address, std::move(up));
  }
  co_return f;
}

Task<bool> Session::reply(int status, std::string_view code, std::string_view message, bool keep,
                          unsigned version, int retry_after) {
  bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(status), version};
  res.set(bhttp::field::server, "qufop-gate");
  res.set(bhttp::field::content_type, "application/json");
  if (retry_after >= 0) res.set(bhttp::field::retry_after, std::to_string(retry_after));
  res.body() = json::error_body(code, message);
  res.keep_alive(keep);
  res.prepare_payload();
  client.expires_after(ms(o.client_timeout_ms));
  auto [ec, n] = co_await bhttp::async_write(client, res, kTuple);
  co_return keep && !ec;
}

Task<bool> Session::reply_raw(int status, std::string content_type, std::string body, bool keep,
                              unsigned version) {
  bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(status), version};
  res.set(bhttp::field::server, "qufop-gate");
  res.set(bhttp::field::content_type, content_type);
  res.body() = std::move(body);
  res.keep_alive(keep);
  res.prepare_payload();
  client.expires_after(ms(o.client_timeout_ms));
  auto [ec, n] = co_await bhttp::async_write(client, res, kTuple);
  co_return keep && !ec;
}

Task<void> serve(Server::Impl& s, Worker& w, Socket sock, ClientLimiter::Address peer) {
  struct Count {
    Server::Impl& s;
    ~Count() { s.open.fetch_sub(1); }
  } count{s};
  Session session(s, w, std::move(sock), peer);
  co_await session.run();
  beast::error_code ignored;
  session.client.socket().shutdown(Socket::shutdown_both, ignored);
}

}  // namespace

Task<void> Server::Impl::accept_loop() {
  Timer pause(workers[0]->ioc.get_executor());
  while (!stopping) {
    // At the cap, stop accepting: new clients wait in the kernel's backlog, none is refused.
    if (open.load() >= options.max_connections) {
      pause.expires_after(5ms);
      co_await pause.async_wait(kTuple);
      continue;
    }
    Worker& w = *workers[next_worker++ % workers.size()];
    tcp::endpoint peer;  // from accept itself: no getpeername per connection
    auto [ec, sock] = co_await acceptor->async_accept(w.ioc, peer, kTuple);
    if (ec) {
      if (stopping || ec == net::error::operation_aborted) co_return;
      spdlog::warn("accept: {}", ec.message());  // e.g. out of file descriptors: back off
      pause.expires_after(50ms);
      co_await pause.async_wait(kTuple);
      continue;
    }
    open.fetch_add(1);
    net::co_spawn(w.ioc, serve(*this, w, std::move(sock), address_key(peer.address())),
                  [](std::exception_ptr e) {
                    if (!e) return;
                    try {
                      std::rethrow_exception(e);
                    } catch (const std::exception& x) {
                      spdlog::error("connection ended by an exception: {}", x.what());
                    }
                  });
  }
}

// Queued requests also move when an ejection ends or a slot frees without a release (a table
// update): a light periodic nudge. Once a second it also forgets refilled --anon-rate buckets.
Task<void> Server::Impl::drain_loop() {
  Timer t(workers[0]->ioc.get_executor());
  for (uint64_t tick = 1; !stopping; ++tick) {
    t.expires_after(100ms);
    co_await t.async_wait(kTuple);
    for (const auto& q : table->queues()) q->drain(wall_ms(), workers[0]->rng);
    if (tick % 10 == 0) anon.expire(steady_ms());
  }
}

// Closes pooled connections idle for long: instances close them on their side too.
Task<void> Server::Impl::prune_loop(Worker& w) {
  Timer t(w.ioc.get_executor());
  while (!w.stopping) {
    t.expires_after(5s);
    co_await t.async_wait(kTuple);
    int64_t now = wall_ms();
    for (auto it = w.pools.begin(); it != w.pools.end();) {
      auto& pool = it->second;
      std::erase_if(pool,
                    [now](const UpstreamPtr& u) { return now - u->idle_since_ms > kPoolIdleMs; });
      it = pool.empty() ? w.pools.erase(it) : std::next(it);
    }
  }
}

// Raw socket operations past their deadline are cancelled; the session sees timed_out. Queued
// requests whose client's hang-up the event loop cannot see are polled.
Task<void> Server::Impl::sweep_loop(Worker& w) {
  Timer t(w.ioc.get_executor());
  for (;;) {
    t.expires_after(kSweepPeriod);
    auto [ec] = co_await t.async_wait(kTuple);
    if (ec) co_return;
    int64_t now = steady_ms();
    for (Session* s : w.sessions) {
      if (s->waiting && s->deadline_ms <= now) {
        s->timed_out = true;
        beast::error_code ignored;
        s->waiting->cancel(ignored);
      }
      if (s->polled && client_gone(s->client.socket().native_handle())) {
        s->polled->abandon();
        s->polled = nullptr;
      }
    }
    if (w.stopping && w.sessions.empty()) co_return;
  }
}

void Server::Impl::begin_stop() {
  if (stopping.exchange(true)) return;
  spdlog::info("stopping: no new connections, finishing requests in flight");
  beast::error_code ignored;
  if (acceptor) acceptor->close(ignored);
  for (auto& w : workers) {
    net::post(w->ioc, [w = w.get()] {
      w->stopping = true;
      for (Session* s : w->sessions) {
        if (s->idle) s->client.socket().cancel();
      }
      w->pools.clear();
    });
  }
  finish_stop(Clock::now() + 5s);
}

void Server::Impl::finish_stop(Clock::time_point deadline) {
  if (open.load() == 0 || Clock::now() >= deadline) {
    for (auto& w : workers) w->ioc.stop();
    return;
  }
  stop_timer.emplace(workers[0]->ioc.get_executor(), 20ms);
  stop_timer->async_wait([this, deadline](beast::error_code) { finish_stop(deadline); });
}

Server::Server(Options options, std::shared_ptr<Table> table, Metrics& metrics)
    : impl_(std::make_shared<Impl>(std::move(options), std::move(table), metrics)) {}

Server::~Server() = default;

Result<HostPort> Server::listen(const HostPort& address) {
  auto& ioc = impl_->workers[0]->ioc;
  beast::error_code ec;
  auto ip = net::ip::make_address(address.host.empty() ? "0.0.0.0" : address.host, ec);
  if (ec) return Error::invalid("listen address '" + address.host + "': " + ec.message());
  tcp::endpoint ep(ip, address.port);
  Acceptor acceptor(ioc.get_executor());
  if (acceptor.open(ep.protocol(), ec); ec) return Error::sys("socket", ec.value());
  acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (acceptor.bind(ep, ec); ec) {
    return Error{"unavailable", "bind(" + address.str() + "): " + ec.message(), ec.value()};
  }
  if (acceptor.listen(4096, ec); ec) return Error::sys("listen(" + address.str() + ")", ec.value());
  auto local = acceptor.local_endpoint(ec);
  impl_->acceptor.emplace(std::move(acceptor));
  return HostPort{local.address().to_string(), local.port()};
}

void Server::run() {
  auto& s = *impl_;
  auto& ioc0 = s.workers[0]->ioc;
  net::signal_set signals(ioc0, SIGTERM, SIGINT);
  signals.async_wait([&s](beast::error_code ec, int sig) {
    if (ec) return;
    spdlog::info("received {}", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    s.begin_stop();
  });
  auto log_error = [](std::exception_ptr e) {
    if (e) spdlog::error("a background task ended by an exception");
  };
  net::co_spawn(ioc0, s.accept_loop(), log_error);
  net::co_spawn(ioc0, s.drain_loop(), log_error);
  std::vector<net::executor_work_guard<net::io_context::executor_type>> guards;
  for (auto& w : s.workers) {
    guards.push_back(net::make_work_guard(w->ioc));
    net::co_spawn(w->ioc, s.prune_loop(*w), log_error);
    net::co_spawn(w->ioc, s.sweep_loop(*w), log_error);
  }
  std::vector<std::thread> threads;
  for (size_t i = 1; i < s.workers.size(); ++i) {
    threads.emplace_back([w = s.workers[i].get()] { w->ioc.run(); });
  }
  ioc0.run();
  for (auto& t : threads) t.join();
}

void Server::stop() {
  net::post(impl_->workers[0]->ioc, [s = impl_] { s->begin_stop(); });
}

std::string Server::render_metrics() const { return render_gate_metrics(*impl_); }

}  // namespace qufop::gate
