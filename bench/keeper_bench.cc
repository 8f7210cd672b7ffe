// Load generator for bench/keeper/run: the same etcd v3 JSON requests against any endpoint.
//   qufop_keeper_bench ENDPOINT put CLIENTS SECONDS   -> acknowledged puts/s
//   qufop_keeper_bench ENDPOINT get CLIENTS SECONDS   -> gets/s
//   qufop_keeper_bench ENDPOINT watch COUNT           -> put-to-watch-delivery p50/p99 (ms)
// Prints one line of "key=value" figures.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "keeper/client.h"

using namespace qufop;
using Clock = std::chrono::steady_clock;

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

int load(const std::vector<HostPort>& ep, bool put, int clients, double seconds) {
  std::atomic<int64_t> done{0}, failed{0};
  std::atomic<bool> stop{false};
  std::vector<double> lat_ms[256];
  std::vector<std::thread> threads;
  std::string value(64, 'v');
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      keeper::Client client(ep);
      for (int64_t i = 0; !stop; ++i) {
        std::string key = "bench/" + std::to_string(c) + "/" + std::to_string(i % 1000);
        auto t0 = Clock::now();
        bool ok = put ? client.put(key, value).ok() : client.get(key).ok();
        if (c < 256) {
          lat_ms[c].push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        }
        (ok ? done : failed)++;
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  std::vector<double> all;
  for (int c = 0; c < std::min(clients, 256); ++c)
    all.insert(all.end(), lat_ms[c].begin(), lat_ms[c].end());
  std::printf("ops_per_s=%.0f failed=%lld p50_ms=%.3f p99_ms=%.3f\n", done / seconds,
              static_cast<long long>(failed.load()), percentile(all, 0.5), percentile(all, 0.99));
  return failed == 0 ? 0 : 1;
}

int watch_latency(const std::vector<HostPort>& ep, int count) {
  std::vector<double> lat_ms;
  std::atomic<bool> ready{false};
  keeper::Client setup(ep);
  auto start = setup.put("benchw/start", "x");
  if (!start) {
    std::fprintf(stderr, "put: %s\n", start.error().message.c_str());
    return 1;
  }
  keeper::WatchCancel cancel;
  std::thread watcher([&] {
    keeper::Client client(ep);
    keeper::WatchCreateRequest req{"benchw/k/", keeper::prefix_end("benchw/k/"), *start + 1};
    auto r = client.watch(
        req,
        [&](const std::vector<keeper::Event>& events, int64_t) {
          int64_t t = now_ns();
          for (const auto& e : events) {
            lat_ms.push_back((t - std::stoll(e.kv.value)) / 1e6);
          }
          return static_cast<int>(lat_ms.size()) < count;
        },
        std::chrono::seconds(30), &cancel);
    if (!r && r.error().code != "cancelled")
      std::fprintf(stderr, "watch: %s\n", r.error().message.c_str());
  });
  keeper::Client writer(ep);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the watch is registered
  for (int i = 0; i < count; ++i) {
    if (auto put = writer.put("benchw/k/" + std::to_string(i), std::to_string(now_ns())); !put) {
      std::fprintf(stderr, "put: %s\n", put.error().message.c_str());
      cancel.cancel();  // the watcher may wait for events that will not come
      watcher.join();
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  watcher.join();
  std::printf("watch_p50_ms=%.3f watch_p99_ms=%.3f events=%zu\n", percentile(lat_ms, 0.5),
              percentile(lat_ms, 0.99), lat_ms.size());
  return static_cast<int>(lat_ms.size()) == count ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s ENDPOINT put|get CLIENTS SECONDS | ENDPOINT watch COUNT\n",
                 argv[0]);
    return 2;
  }
  auto ep = keeper::parse_endpoints(argv[1]);
  if (!ep) {
    std::fprintf(stderr, "%s\n", ep.error().message.c_str());
    return 2;
  }
  std::string mode = argv[2];
  if (mode == "watch") return watch_latency(*ep, std::stoi(argv[3]));
  if (argc < 5) return 2;
  return load(*ep, mode == "put", std::stoi(argv[3]), std::stod(argv[4]));
}
