// For the keeper crash test: writes unique keys from several threads and prints each
// acknowledged write as "KEY REVISION" (flushed at once), retrying while keeper is away.
//   keeper_writer ENDPOINT PREFIX THREADS
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "keeper/client.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: keeper_writer ENDPOINT PREFIX THREADS\n");
    return 2;
  }
  auto endpoints = qufop::keeper::parse_endpoints(argv[1]);
  if (!endpoints) return 2;
  std::string prefix = argv[2];
  std::mutex out_mu;
  std::vector<std::thread> threads;
  for (int t = 0; t < std::stoi(argv[3]); ++t) {
    threads.emplace_back([&, t] {
      qufop::keeper::Client client(
          *endpoints, {std::chrono::milliseconds(200), std::chrono::milliseconds(2000)});
      for (int i = 0;; ++i) {
        std::string key = prefix + std::to_string(t) + "/" + std::to_string(i);
        auto rev = client.put(key, "v" + std::to_string(i));
        if (!rev) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
          continue;  // unacknowledged: the test may or may not find this key
        }
        std::lock_guard lock(out_mu);
        std::fprintf(stdout, "%s %lld\n", key.c_str(), static_cast<long long>(*rev));
        std::fflush(stdout);
      }
    });
  }
  for (auto& t : threads) t.join();
}
