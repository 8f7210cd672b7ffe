#include "cli/client.h"
#include "common/files.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/auth.h"

namespace qufop::cli {

Result<ConfigLocation> config_location(std::string_view explicit_path, const char* env_config,
                                       const char* env_home) {
  if (!explicit_path.empty()) return ConfigLocation{std::string(explicit_path), true};
  if (env_config != nullptr && *env_config != '\0') return ConfigLocation{env_config, true};
  if (env_home == nullptr || *env_home == '\0') {
    return Error::invalid("no config file: $HOME is not set (pass --config FILE)");
  }
  return ConfigLocation{std::string(env_home) + "/.qufop/config", false};
}

Result<ClientConfig> parse_client_config(std::string_view text, std::string_view source) {
  auto entries = parse_config_text(text, source);
  if (!entries) return entries.error();
  ClientConfig config;
  config.path = std::string(source);
  for (const auto& [key, value] : *entries) {
    if (key == "scheduler") {
      config.scheduler = value;
    } else if (key == "gate") {
      config.gate = value;
    } else if (key == "access_key") {
      config.access_key = value;
    } else if (key == "secret_key") {
      config.secret_key = value;
    } else {
      return Error::invalid(std::string(source) + ": unknown key '" + key +
                            "' (keys: scheduler, gate, access_key, secret_key)");
    }
  }
  return config;
}

Result<ClientConfig> load_client_config(const ConfigLocation& where) {
  std::ifstream in(where.path);
  if (!in) {
    int err = errno;
    if (err == ENOENT && !where.required) return ClientConfig{};
    return Error::sys("open config " + where.path, err);
  }
  std::stringstream text;
  text << in.rdbuf();
  return parse_client_config(text.str(), where.path);
}

std::string format_client_config(const ClientConfig& config) {
  // Quoted so that any '#' or blank in a value survives parse_config_text.
  return "# qufopctl config (written by qufopctl login)\n"
         "scheduler = \"" +
         config.scheduler + "\"\n" + "gate = \"" + config.gate + "\"\n" + "access_key = \"" +
         config.access_key + "\"\n" + "secret_key = \"" + config.secret_key + "\"\n";
}

Result<void> write_client_config(const std::string& path, const ClientConfig& config) {
  auto slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, std::max<size_t>(slash, 1));
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return Error::sys("mkdir " + dir, errno);
  return write_file_atomic(path, format_client_config(config), 0600);
}

Error unreachable(std::string_view endpoint, const Error& transport) {
  // Only a failure to connect means "cannot reach"; a failure later keeps its own words.
  const std::string& m = transport.message;
  if (m.rfind("connect ", 0) != 0 && m.rfind("resolve ", 0) != 0) {
    if (m.find(endpoint) != std::string::npos) return transport;
    return Error{transport.code, "the scheduler at " + std::string(endpoint) + ": " + m,
                 transport.sys_errno};
  }
  std::string reason;
  if (transport.sys_errno == ECONNREFUSED) {
    reason = "connection refused";
  } else if (transport.code == "timeout") {
    reason = "timed out";
  } else {
    // "connect H:P: <reason>" or "resolve H: <reason>": keep the reason only.
    reason = transport.message;
    if (auto colon = reason.rfind(": "); colon != std::string::npos)
      reason = reason.substr(colon + 2);
  }
  return Error{"unavailable",
               "cannot reach the scheduler at " + std::string(endpoint) + ": " + reason,
               transport.sys_errno};
}

Error error_from_response(const http::Response& response) {
  auto v = json::parse(response.body);
  if (v && v->is_object()) {
    const auto& o = v->as_object();
    auto code = json::get_string(o, "error");
    auto message = json::get_string(o, "message");
    if (code && message) {
      std::string text = *message;
      if (response.status == 401) text += " (check the keys in your config: qufopctl login)";
      return Error{*code, text, 0};
    }
  }
  std::string body = response.body.substr(0, 200);
  while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
  return Error{"internal",
               "the scheduler answered " + std::to_string(response.status) +
                   (body.empty() ? "" : ": " + body),
               0};
}

ApiClient::ApiClient(ClientConfig config, HostPort scheduler)
    : config_(std::move(config)),
      scheduler_(std::move(scheduler)),
      http_(std::make_shared<http::Client>(scheduler_.host, scheduler_.port)) {}

Result<ApiClient> ApiClient::create(const ClientConfig& config) {
  auto hp = parse_host_port(config.scheduler, false);
  if (!hp) return hp.error().wrap("scheduler address");
  if (config.access_key.empty() || config.secret_key.empty()) {
    return Error::invalid(
        "no access key: run 'qufopctl login --access-key AK --secret-key SK' first (or pass "
        "--access-key and --secret-key)");
  }
  return ApiClient(config, *hp);
}

http::Request ApiClient::signed_request(std::string method, std::string target,
                                        std::string content_type, std::string body) const {
  return sign_request(config_.access_key, config_.secret_key, http_->endpoint(), std::move(method),
                      std::move(target), std::move(content_type), std::move(body),
                      std::chrono::system_clock::now(), random_nonce());
}

Result<json::Value> ApiClient::call(std::string method, std::string target,
                                    const std::optional<json::Value>& body) {
  auto req = body ? signed_request(std::move(method), std::move(target), "application/json",
                                   json::serialize(*body))
                  : signed_request(std::move(method), std::move(target), "", "");
  auto res = http_->send(req);
  if (!res) return unreachable(http_->endpoint(), res.error());
  if (res->status < 200 || res->status > 299) return error_from_response(*res);
  auto v = json::parse(res->body);
  if (!v) return v.error().wrap("the scheduler's answer to " + req.target);
  return v;
}

}  // namespace qufop::cli
