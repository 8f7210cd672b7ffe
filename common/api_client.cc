#include "common/api_client.h"

#include "common/random.h"

namespace qufop::api {

namespace {

// Makes every request's signature unique (the server refuses one it has seen: replays).
std::string nonce() {
  auto hex = random_hex(8);
  return hex ? *hex : std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
}

}  // namespace

ApiClient::ApiClient(std::string host, uint16_t port, auth::Credentials credentials,
                     http::ClientOptions options)
    : host_header_(host + ":" + std::to_string(port)),
      credentials_(std::move(credentials)),
      client_(std::make_unique<http::Client>(std::move(host), port, options)) {}

ApiClient::~ApiClient() = default;

std::string ApiClient::endpoint() const { return client_->endpoint(); }

http::Request ApiClient::signed_request(std::string_view method, std::string_view target,
                                        std::string body, std::string content_type) {
  http::Request r;
  r.method = std::string(method);
  r.target = std::string(target);
  auto [path, query] = http::split_target(target);
  r.body = std::move(body);
  r.headers.emplace_back("Host", host_header_);
  if (!r.body.empty() || method == "POST") r.headers.emplace_back("Content-Type", content_type);
  r.headers.emplace_back("X-Qiniu-Date", auth::format_qiniu_date(std::chrono::system_clock::now()));
  r.headers.emplace_back("X-Qiniu-Nonce", nonce());
  auth::SignableRequest s;
  s.method = r.method;
  s.path = path;
  s.query = query;
  s.host = host_header_;
  s.content_type = (!r.body.empty() || method == "POST") ? content_type : "";
  s.headers = r.headers;
  s.body = r.body;
  r.headers.emplace_back("Authorization",
                         auth::authorization(credentials_.access_key, credentials_.secret_key, s));
  return r;
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
