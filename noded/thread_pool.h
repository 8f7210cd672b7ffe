// A fixed pool of worker threads running submitted tasks in order of submission.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace qufop::noded {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();  // stop()
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Never runs the task inline.
  void submit(std::function<void()> task);
  // Lets the running tasks finish, drops the queued ones, joins.
  void stop();

 private:
  void run();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace qufop::noded
