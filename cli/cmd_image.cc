#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include "cli/command.h"
#include "cli/invocation.h"

namespace qufop::cli {
namespace {

int image_import(const std::vector<std::string>& args) {
  Invocation inv("image import", "NAME TAR",
                 "Uploads a rootfs tarball (tar or tar.gz) or an OCI archive as the base image\n"
                 "NAME, for 'image: NAME' in ufop.yaml (admin only).",
                 {}, 2, 2, true);
  if (int rc = inv.parse(args); rc >= 0) return rc;
  const std::string& name = inv.arg(0);
  const std::string& path = inv.arg(1);
  if (name.empty()) return inv.usage_error("empty image name");
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return inv.fail(Error::sys("open " + path, errno));
  struct stat st {};
  unsigned char magic[2] = {0, 0};
  bool regular = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  bool gzip = ::pread(fd, magic, 2, 0) == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
  if (!regular) {
    ::close(fd);
    return inv.fail(Error::invalid(path + ": not a regular file"));
  }
  auto client = inv.client();
  if (!client) {
    ::close(fd);
    return inv.fail(client.error());
  }
  std::string answer;
  auto res = upload(
      *client, "/v1/images?name=" + http::url_encode(name),
      gzip ? "application/gzip" : "application/x-tar", fd, static_cast<uint64_t>(st.st_size), "",
      [&](std::string_view d) {
        answer.append(d);
        return true;
      },
      std::chrono::minutes(30));
  ::close(fd);
  if (!res) return inv.fail(res.error());
  auto v = json::parse(answer);
  if (!v) return inv.fail(v.error().wrap("the scheduler's answer"));
  if (inv.json()) {
    print_json(*v);
    return kOk;
  }
  std::string digest;
  if (v->is_object()) {
    if (auto d = json::get_string(v->as_object(), "digest"); d) digest = *d;
  }
  std::printf("imported image %s (%s)\n", name.c_str(), digest.c_str());
  return kOk;
}

}  // namespace

int cmd_image(const std::vector<std::string>& args) {
  if (!args.empty() && args[0] == "import") {
    return image_import(std::vector<std::string>(args.begin() + 1, args.end()));
  }
  if (!args.empty() && (args[0] == "-h" || args[0] == "--help")) {
    std::printf("usage: qufopctl image import NAME TAR\n");
    return kOk;
  }
  std::fprintf(stderr, "qufopctl image: expected 'import NAME TAR' (see qufopctl image --help)\n");
  return kUsage;
}

}  // namespace qufop::cli
