// The builder's HTTP API (vendor-docs/builder.md):
//   POST /v1/builds?ufop=NAME&version=N   body: the upload (tar or tar.gz). Answers with a
//        chunked text/plain stream: the build log, one line each, then a final JSON line,
//        {"digest":"sha256:…","ref":"NAME:N"} or {"error":CODE,"message":…}. A request that is
//        refused before the build starts (bad query, bad archive, bad ufop.yaml, too many builds)
//        gets a plain JSON error response (400, 429) instead.
//   POST /v1/images?name=NAME[:TAG]         body: a rootfs tarball (tar, tar.gz): a base image.
//        201 {"name":…,"digest":…}. With a join token set, both POSTs need it (Bearer).
//   GET  /v2/                              the OCI distribution API's version check: {}
//   GET|HEAD /v2/<name>/manifests/<tag|digest>
//   GET|HEAD /v2/<name>/blobs/<digest>
//   GET  /v2/<name>/tags/list              {"name":…,"tags":[…]} (skopeo inspect asks for it)
// Registry errors use the distribution API's form {"errors":[{"code":"BLOB_UNKNOWN",…}]}.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "builder/build.h"
#include "builder/extract.h"
#include "common/http_server.h"

namespace qufop::builder {

struct ServiceOptions {
  std::string upload_dir;  // temp files of uploads (under the state dir)
  int max_builds = 2;      // at once; more are answered 429
  ExtractLimits upload_limits;
  // When set, POST /v1/builds and /v1/images need `Authorization: Bearer <token>` (the
  // scheduler's cluster token); the registry's reads stay open to the nodes.
  std::string join_token;
  // Else the token in this file, read at each request when it exists (the scheduler of a
  // one-host cluster creates it, maybe after the builder started).
  std::string join_token_file;
};

class Service {
 public:
  // Adds the routes to `server`; `builder` must outlive the service.
  Service(http::Server& server, Builder& builder, ServiceOptions options);
  // Waits for the builds in progress.
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Waits for the builds in progress (called when the daemon stops).
  void shutdown();

 private:
  void post_build(http::Request req, http::Responder res);
  // POST /v1/images?name=NAME[:TAG]: the body, a rootfs tarball, becomes a base image.
  void post_image(http::Request req, http::Responder res);
  // Answers 401 and returns false when a join token is set and the request lacks it.
  bool token_ok(const http::Request& req, http::Responder& res) const;
  void run_build(http::Request req, http::Responder res, std::string ufop, std::string version);
  void registry(http::Request req, http::Responder res);

  Builder& builder_;
  ServiceOptions options_;
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::mutex mu_;
  int running_ = 0;
  std::vector<Worker> threads_;
};

// The distribution API's error body: {"errors":[{"code":CODE,"message":MESSAGE,"detail":{}}]}.
std::string registry_error_body(std::string_view code, std::string_view message);

}  // namespace qufop::builder
