#include "common/api_client.h"

#include <cstdlib>

#include "common/random.h"

namespace qufop::api {

std::string random_nonce() {
  auto hex = random_hex(8);
  if (!hex) std::abort();  // invariant: getrandom on Linux >= 3.17 does not fail
  return *hex;
}

http::Request sign_request(std::string_view access_key, std::string_view secret_key,
                           std::string_view host, std::string method, std::string target,
                           std::string content_type, std::string body,
                           std::chrono::system_clock::time_point now, std::string nonce) {
  http::Request req;
  req.method = std::move(method);
  req.target = std::move(target);
  auto [path, query] = http::split_target(req.target);
  req.path = path;
  req.query = query;
  req.headers = {{"X-Qiniu-Date", auth::format_qiniu_date(now)},
                 {"X-Qiniu-Nonce", std::move(nonce)}};
  if (!content_type.empty()) req.headers.emplace_back("Content-Type", content_type);
  auth::SignableRequest s{req.method,   req.path,    req.query, std::string(host),
                          content_type, req.headers, {}};
  // Only JSON and form bodies are signed (auth.h); do not copy a large upload for nothing.
  std::string_view media = std::string_view(content_type).substr(0, content_type.find(';'));
  if (media == "application/json" || media == "application/x-www-form-urlencoded") s.body = body;
  req.headers.emplace_back("Authorization", auth::authorization(access_key, secret_key, s));
  req.body = std::move(body);
  return req;
}

ApiClient::ApiClient(std::string host, uint16_t port, auth::Credentials credentials,
                     http::ClientOptions options)
    : host_header_(host + ":" + std::to_string(port)),
      credentials_(std::move(credentials)),
      client_(std::make_unique<http::Client>(std::move(host), port, options)) {}

ApiClient::~ApiClient() = default;

std::string ApiClient::endpoint() const { return client_->endpoint(); }

http::Request ApiClient::signed_request(std::string_view method, std::string_view target,
                                        std::string body, std::string content_type) {
  bool typed = !body.empty() || method == "POST";
  return sign_request(credentials_.access_key, credentials_.secret_key, host_header_,
                      std::string(method), std::string(target), typed ? content_type : "",
                      std::move(body), std::chrono::system_clock::now(), random_nonce());
}

Result<http::Response> ApiClient::call(std::string_view method, std::string_view target,
                                       std::string body, std::string content_type) {
  return client_->send(signed_request(method, target, std::move(body), std::move(content_type)));
}

Result<int> ApiClient::stream(std::string_view method, std::string_view target, std::string body,
                              std::string content_type,
                              const std::function<bool(int, const http::Headers&)>& on_head,
                              const std::function<bool(std::string_view)>& on_data,
                              std::chrono::milliseconds idle_timeout) {
  return client_->stream(signed_request(method, target, std::move(body), std::move(content_type)),
                         on_head, on_data, idle_timeout);
}

}  // namespace qufop::api
