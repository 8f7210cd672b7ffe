#include "cli/invocation.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "cli/command.h"
#include "common/api.h"

namespace qufop::cli {
namespace {

std::vector<Option> with_common(std::vector<Option> options, bool prints_records) {
  options.push_back(
      {"config", 0, "FILE", "client config (default $QUFOP_CONFIG, ~/.qufop/config)"});
  options.push_back({"scheduler", 0, "HOST:PORT", "the scheduler (overrides the config)"});
  options.push_back({"access-key", 0, "AK", "access key (overrides the config)"});
  options.push_back({"secret-key", 0, "SK", "secret key (overrides the config)"});
  if (prints_records) options.push_back({"json", 0, "", "print the server's JSON answer"});
  return options;
}

}  // namespace

Invocation::Invocation(std::string command, std::string synopsis, std::string summary,
                       std::vector<Option> options, size_t min_positional, size_t max_positional,
                       bool prints_records)
    : args_(std::move(command), std::move(synopsis), std::move(summary),
            with_common(std::move(options), prints_records), min_positional, max_positional),
      json_(prints_records) {}

int Invocation::parse(const std::vector<std::string>& args) {
  if (auto r = args_.parse(args); !r) return usage_error(r.error().message);
  if (args_.help()) {
    std::fputs(args_.usage().c_str(), stdout);
    return kOk;
  }
  return -1;
}

Result<ClientConfig> Invocation::config() const {
  auto where =
      config_location(args_.get("config"), std::getenv("QUFOP_CONFIG"), std::getenv("HOME"));
  if (!where) return where.error();
  auto config = load_client_config(*where);
  if (!config) return config.error();
  if (args_.has("scheduler")) config->scheduler = args_.get("scheduler");
  if (args_.has("access-key")) config->access_key = args_.get("access-key");
  if (args_.has("secret-key")) config->secret_key = args_.get("secret-key");
  return config;
}

Result<ApiClient> Invocation::client() const {
  auto c = config();
  if (!c) return c.error();
  return ApiClient::create(*c);
}

int Invocation::usage_error(std::string_view message) const {
  std::fprintf(stderr, "qufopctl %s: %.*s (see qufopctl %s --help)\n", args_.command().c_str(),
               static_cast<int>(message.size()), message.data(), args_.command().c_str());
  return kUsage;
}

int Invocation::fail(const Error& error) const {
  std::fprintf(stderr, "qufopctl: %s\n", error.message.c_str());
  return kFailed;
}

int Invocation::check_name(const std::string& name) const {
  if (auto r = api::check_ufop_name(name); !r) return usage_error(r.error().message);
  return -1;
}

void print_json(const json::Value& v) { std::printf("%s\n", json::serialize(v).c_str()); }

Result<const json::Array*> list_field(const json::Value& v, std::string_view field) {
  const json::Value* list = v.is_object() ? v.as_object().if_contains(field) : nullptr;
  if (list == nullptr || !list->is_array()) {
    return Error::invalid("the scheduler's answer has no \"" + std::string(field) + "\" list");
  }
  return &list->as_array();
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

namespace {

// Draws "uploading [#####.....]  45%  1.2MiB/2.6MiB" in place, at most once per percent.
class ProgressBar {
 public:
  explicit ProgressBar(bool tty) : tty_(tty) {}
  void update(uint64_t sent, uint64_t total) {
    sent_ = sent;
    if (!tty_) return;
    int pct = total == 0 ? 100 : static_cast<int>(sent * 100 / total);
    if (pct == last_pct_) return;
    last_pct_ = pct;
    std::string bar(30, '.');
    std::fill(bar.begin(), bar.begin() + pct * 30 / 100, '#');
    std::fprintf(stderr, "\ruploading [%s] %3d%%  %s/%s", bar.c_str(), pct,
                 format_size(sent).c_str(), format_size(total).c_str());
    std::fflush(stderr);
  }
  // The upload failed: end the bar's line, claim nothing.
  void abort() {
    if (tty_ && last_pct_ >= 0) std::fputc('\n', stderr);
  }
  void finish() {
    if (tty_ && last_pct_ >= 0) {
      std::fputc('\n', stderr);
    } else if (!tty_) {
      std::fprintf(stderr, "uploaded %llu bytes\n", static_cast<unsigned long long>(sent_));
    }
  }

 private:
  static std::string format_size(uint64_t n) {
    char buf[32];
    if (n < (1u << 20)) {
      std::snprintf(buf, sizeof buf, "%.1fKiB", static_cast<double>(n) / 1024);
    } else {
      std::snprintf(buf, sizeof buf, "%.1fMiB", static_cast<double>(n) / (1 << 20));
    }
    return buf;
  }
  bool tty_;
  int last_pct_ = -1;
  uint64_t sent_ = 0;
};

Result<void> exchange(const ApiClient& client, const http::Request& req, int fd, uint64_t size,
                      ProgressBar* bar, const std::function<bool(std::string_view)>& on_data,
                      std::chrono::milliseconds silence) {
  int status = 0;
  std::string error_body;
  bool progress_done = bar == nullptr;
  StreamCallbacks cb;
  if (bar != nullptr) cb.on_progress = [&](uint64_t s, uint64_t t) { bar->update(s, t); };
  cb.on_status = [&](int s, const http::Headers&) {
    status = s;
    if (!progress_done) {
      bar->finish();
      progress_done = true;
    }
  };
  cb.on_data = [&](std::string_view data) {
    if (status >= 200 && status <= 299) return on_data(data);
    if (error_body.size() < (64 << 10)) error_body.append(data);
    return true;
  };
  const HostPort& hp = client.scheduler();
  auto res = exchange_streaming(hp.host, hp.port, req, fd, size, cb, silence);
  if (!progress_done) bar->abort();
  if (!res) {
    if (status == 0) return unreachable(hp.str(), res.error());
    return res.error().wrap("reading the answer of " + hp.str());
  }
  if (*res < 200 || *res > 299) {
    http::Response r;
    r.status = *res;
    r.body = std::move(error_body);
    return error_from_response(r);
  }
  return ok();
}

}  // namespace

Result<void> upload(const ApiClient& client, std::string target, std::string content_type, int fd,
                    uint64_t size, std::string body,
                    const std::function<bool(std::string_view)>& on_data,
                    std::chrono::milliseconds silence) {
  auto req = client.signed_request("POST", std::move(target), std::move(content_type),
                                   fd >= 0 ? std::string() : std::move(body));
  ProgressBar bar(::isatty(STDERR_FILENO) == 1);
  return exchange(client, req, fd, size, &bar, on_data, silence);
}

Result<void> get_streaming(const ApiClient& client, std::string target,
                           const std::function<bool(std::string_view)>& on_data,
                           std::chrono::milliseconds silence) {
  auto req = client.signed_request("GET", std::move(target), "", "");
  return exchange(client, req, -1, 0, nullptr, on_data, silence);
}

}  // namespace qufop::cli

namespace qufop::cli {

const char* mode_name(api::UfopMode mode) {
  switch (mode) {
    case api::UfopMode::kPublic:
      return "public";
    case api::UfopMode::kSemiPublic:
      return "semi-public";
    case api::UfopMode::kPrivate:
      return "private";
  }
  return "?";
}

}  // namespace qufop::cli
