// The scheduler's HTTP API (vendor-docs/scheduler.md): the node protocol, behind the cluster
// token, and the public operations qufopctl uses, each signed by a user (users.h) and allowed
// by ownership: a UFOP's owner or an admin changes it; public and semi-public UFOPs can be read
// by anyone signed in. Builds, image imports and logs go through to the builder and the nodes.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/config.h"
#include "common/http_server.h"
#include "scheduler/controller.h"
#include "scheduler/users.h"

namespace qufop::scheduler {

struct ServiceOptions {
  std::string join_token;
  HostPort builder;      // the builder's API: builds and base image imports
  std::string registry;  // host:port the nodes pull images from (the builder's /v2 by default)
};

class Service {
 public:
  // Adds the routes; `controller` and `users` must outlive the service.
  Service(http::Server& server, Controller& controller, Users& users, ServiceOptions options);
  ~Service();  // waits for the builds and log streams in progress
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  void shutdown();

 private:
  void handle(http::Request req, http::Responder res);
  http::Response node_request(const http::Request& req, const std::string& node,
                              const std::string& what, http::Responder* res);
  // Public routes; `res` is taken (and 0 returned) by the ones that answer later.
  http::Response user_request(const http::Request& req, const api::UserRecord& user,
                              const std::vector<std::string>& parts, http::Responder* res);
  http::Response ufop_request(const http::Request& req, const api::UserRecord& user,
                              const std::string& name, const std::string& what,
                              http::Responder* res);
  http::Response create_ufop(const http::Request& req, const api::UserRecord& user);
  http::Response list_ufops(const api::UserRecord& user);
  http::Response list_nodes();
  bool token_ok(const http::Request& req) const;

  // On a worker thread: the build through the builder, then the new version registered.
  void build(http::Request req, http::Responder res, std::string ufop);
  void import_image(http::Request req, http::Responder res);
  void logs(http::Request req, http::Responder res, std::string ufop);
  Result<api::InstanceSpec> spec_of_image(const std::string& name, const std::string& tag);
  // Runs `work` (move-only is fine) on a thread joined by shutdown().
  template <typename Work>
  void spawn(Work work) {
    auto done = std::make_shared<std::atomic<bool>>(false);
    std::thread t([work = std::move(work), done]() mutable {
      work();
      *done = true;
    });
    std::lock_guard lock(mu_);
    reap_finished_locked();
    workers_.push_back({std::move(t), std::move(done)});
  }
  void reap_finished_locked();

  Controller& controller_;
  Users& users_;
  ServiceOptions options_;

  std::mutex mu_;
  std::set<std::string> building_;  // UFOPs with a build in progress
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Worker> workers_;
};

// The status a controller error answers with: invalid_argument 400, unauthorized 401,
// permission_denied 403, not_found 404, already_exists/conflict/insufficient_capacity 409,
// unavailable 503, others 500.
http::Response error_response(const Error& e);

}  // namespace qufop::scheduler
