#include <sys/stat.h>

#include <cstdio>

#include "cli/command.h"
#include "cli/invocation.h"
#include "cli/tar.h"

namespace qufop::cli {
namespace {

// The build log arrives line by line; the last line is the JSON result. A log line that merely
// looks like a result is held back until the next line shows it was not the last.
class BuildLog {
 public:
  bool feed(std::string_view data) {
    partial_.append(data);
    size_t nl;
    while ((nl = partial_.find('\n')) != std::string::npos) {
      line(partial_.substr(0, nl));
      partial_.erase(0, nl + 1);
    }
    return true;
  }
  // The final result line, once the stream ended.
  std::string finish() {
    if (!partial_.empty()) line(partial_);
    partial_.clear();
    return held_;
  }

 private:
  void line(std::string text) {
    if (!held_.empty()) std::printf("%s\n", held_.c_str());
    held_.clear();
    if (text.rfind("{\"version\"", 0) == 0 || text.rfind("{\"error\"", 0) == 0) {
      held_ = std::move(text);
    } else {
      std::printf("%s\n", text.c_str());
    }
    std::fflush(stdout);
  }
  std::string partial_;
  std::string held_;
};

// "" when DIR is a directory holding ufop.yaml, else why not.
std::string check_dir(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return dir + ": no such directory";
  if (!S_ISDIR(st.st_mode)) return dir + ": not a directory";
  if (::stat((dir + "/ufop.yaml").c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return dir + " has no ufop.yaml (the UFOP descriptor: see vendor-docs/ufop-yaml.md)";
  }
  return "";
}

}  // namespace

int cmd_build(const std::vector<std::string>& args) {
  Invocation inv("build", "NAME -d DIR",
                 "Tars DIR (it holds ufop.yaml), uploads it, streams the build log and prints\n"
                 "the new version and its image digest.",
                 {{"dir", 'd', "DIR", "the UFOP's directory"}}, 1, 1, false);
  if (int rc = inv.parse(args); rc >= 0) return rc;
  const std::string& name = inv.arg(0);
  if (int rc = inv.check_name(name); rc >= 0) return rc;
  if (!inv.args().has("dir")) return inv.usage_error("-d DIR is required");
  std::string dir = inv.args().get("dir");
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (auto why = check_dir(dir); !why.empty()) return inv.fail(Error::invalid(why));
  auto client = inv.client();
  if (!client) return inv.fail(client.error());
  auto archive = tar_directory(dir);
  if (!archive) return inv.fail(archive.error());

  BuildLog log;
  uint64_t size = archive->size();
  // A build step may be silent for a long time (a big copy); the builder has its own timeout.
  auto res = upload(
      *client, "/v1/ufops/" + name + "/build", "application/x-tar", -1, size, std::move(*archive),
      [&](std::string_view d) { return log.feed(d); }, std::chrono::minutes(30));
  std::string result = log.finish();
  if (!res) return inv.fail(res.error());
  auto v = json::parse(result);
  if (result.empty() || !v || !v->is_object()) {
    return inv.fail(Error::io("the build log ended without a result line"));
  }
  const auto& o = v->as_object();
  if (auto version = json::get_int(o, "version"); version) {
    auto digest = json::get_string(o, "digest");
    std::printf("version %lld (%s)\n", static_cast<long long>(*version),
                digest ? digest->c_str() : "no digest");
    return kOk;
  }
  auto message = json::get_string(o, "message");
  return inv.fail(Error{"build", "build failed: " + (message ? *message : result), 0});
}

}  // namespace qufop::cli
