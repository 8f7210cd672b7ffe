// A client of the scheduler's public API that signs every request the Qiniu way
// (vendor-docs/scheduler.md): Authorization: Qiniu AK:SIGN over the method, path, query, host,
// content type, the X-Qiniu-* headers (a date, and a random nonce so that no two requests sign
// alike: the server refuses a signature it has seen) and a JSON body. qufopctl, qufopd's demo
// and the tests use it.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/auth.h"
#include "common/http.h"
#include "common/http_client.h"
#include "common/result.h"

namespace qufop::api {

// A request ready to send: Authorization, X-Qiniu-Date (`now`), X-Qiniu-Nonce and, when a body
// type is given, Content-Type set. `host` is "host:port" as dialled (the Host header). Only
// JSON and form bodies are signed (auth.h).
http::Request sign_request(std::string_view access_key, std::string_view secret_key,
                           std::string_view host, std::string method, std::string target,
                           std::string content_type, std::string body,
                           std::chrono::system_clock::time_point now, std::string nonce);
// 16 random hex digits: every signature differs (the scheduler refuses one it has seen).
std::string random_nonce();

class ApiClient {
 public:
  ApiClient(std::string host, uint16_t port, auth::Credentials credentials,
            http::ClientOptions options = {});
  ~ApiClient();

  // Signs and sends; the response whatever its status.
  Result<http::Response> call(std::string_view method, std::string_view target,
                              std::string body = "", std::string content_type = "application/json");
  // Streams the response body (build logs, followed logs); on_head sees the status first.
  Result<int> stream(std::string_view method, std::string_view target, std::string body,
                     std::string content_type,
                     const std::function<bool(int status, const http::Headers&)>& on_head,
                     const std::function<bool(std::string_view)>& on_data,
                     std::chrono::milliseconds idle_timeout);

  std::string endpoint() const;

 private:
  http::Request signed_request(std::string_view method, std::string_view target, std::string body,
                               std::string content_type);
  std::string host_header_;
  auth::Credentials credentials_;
  std::unique_ptr<http::Client> client_;
};

}  // namespace qufop::api
