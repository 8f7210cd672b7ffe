// What every qufopctl command that talks to the scheduler shares: the client config file
// (`key = value` lines: scheduler, gate, access_key, secret_key), request signing
// (/work/notes/public-api.md: Qiniu v2 with X-Qiniu-Date and a random X-Qiniu-Nonce) and one
// blocking API client whose errors are one line each.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/api_client.h"
#include "common/config.h"
#include "common/http.h"
#include "common/http_client.h"
#include "common/json.h"
#include "common/result.h"

namespace qufop::cli {

inline constexpr std::string_view kDefaultScheduler = "127.0.0.1:7200";
inline constexpr std::string_view kDefaultGate = "127.0.0.1:7500";

struct ClientConfig {
  std::string scheduler = std::string(kDefaultScheduler);
  std::string gate = std::string(kDefaultGate);
  std::string access_key;
  std::string secret_key;
  std::string path;  // the file it came from ("" when none was read)
};

// The config file to use: `explicit_path` (--config), else $QUFOP_CONFIG, else
// $HOME/.qufop/config. `required` is true when the user named the file (a missing one is an
// error then, while a missing ~/.qufop/config only means "not logged in").
struct ConfigLocation {
  std::string path;
  bool required = false;
};
Result<ConfigLocation> config_location(std::string_view explicit_path, const char* env_config,
                                       const char* env_home);

// Reads the file at `where` (absent and not required: defaults). Unknown keys are refused.
Result<ClientConfig> load_client_config(const ConfigLocation& where);
// Parses config text; `source` names it in errors.
Result<ClientConfig> parse_client_config(std::string_view text, std::string_view source);
std::string format_client_config(const ClientConfig& config);
// Writes the file with mode 0600 (via a temporary file and rename), creating a missing parent
// directory with mode 0700.
Result<void> write_client_config(const std::string& path, const ClientConfig& config);

// Request signing is common/api_client.h's.
using api::random_nonce;
using api::sign_request;

// "cannot reach the scheduler at 127.0.0.1:7200: connection refused" from a failed connect;
// a transport error after connecting is named as such.
Error unreachable(std::string_view endpoint, const Error& transport);
// The server's {"error","message"} body (or the status and text) as an Error.
Error error_from_response(const http::Response& response);

class ApiClient {
 public:
  // Fails when the scheduler address does not parse or the keys are missing.
  static Result<ApiClient> create(const ClientConfig& config);

  // Sends a signed request; a JSON body when `body` is set. 2xx: the parsed JSON answer.
  Result<json::Value> call(std::string method, std::string target,
                           const std::optional<json::Value>& body = std::nullopt);
  // A signed request for the raw streaming client (uploads, followed logs).
  http::Request signed_request(std::string method, std::string target, std::string content_type,
                               std::string body) const;

  const HostPort& scheduler() const { return scheduler_; }
  const ClientConfig& config() const { return config_; }

 private:
  ApiClient(ClientConfig config, HostPort scheduler);
  ClientConfig config_;
  HostPort scheduler_;
  std::shared_ptr<http::Client> http_;
};

}  // namespace qufop::cli
