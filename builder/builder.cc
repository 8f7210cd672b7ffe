#include "builder/builder.h"

#include "builder/import.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <tuple>
#include <utility>
#include <variant>

#include "builder/build.h"
#include "builder/descriptor.h"
#include "builder/layer.h"
#include "builder/oci.h"
#include "builder/puller.h"
#include "builder/pusher.h"
#include "builder/server.h"

namespace qufop::builder {

const DaemonInfo& info() {
  static const DaemonInfo kInfo{
      "builder", "qufop-builder",
      "Builds UFOP descriptors into OCI images and serves them to nodes.\n"
      "Also: qufop-builder import NAME[:TAG] TAR [--data-dir DIR]\n"
      "      qufop-builder push NAME:TAG REGISTRY_HOST:PORT [--data-dir DIR] [--as NAME:TAG]\n"
      "      qufop-builder pull NAME:TAG REGISTRY_HOST:PORT [--data-dir DIR] [--cache DIR]",
      "127.0.0.1:7400"};
  return kInfo;
}

std::vector<FlagSpec> flags() {
  return {
      {"build-timeout", "DURATION", "a build_script running longer is stopped", "10m"},
      {"build-memory", "SIZE", "memory limit of a build sandbox", "2g"},
      {"build-cpus", "N", "cpu limit of a build sandbox", "2"},
      {"max-builds", "N", "builds at once; more are answered 429", "2"},
      {"max-upload", "SIZE", "largest unpacked upload", "2g"},
      {"max-request", "SIZE", "largest upload as sent (tar or tar.gz)", "512m"},
      {"init", "PATH", "the qufop-init binary (default: next to qufop-builder, $QUFOP_INIT)", ""},
      {"join-token", "TOKEN",
       "the cluster token builds and imports need (default: <data-dir>/scheduler/join-token "
       "when it exists)",
       ""},
  };
}

std::string images_dir(const std::string& data_dir) { return data_dir + "/builder/images"; }

int import_main(int argc, const char* const* argv) {
  const char* prog = "qufop-builder import";
  Flags f(prog,
          "usage: qufop-builder import NAME[:TAG] TAR [--data-dir DIR]\n"
          "Imports a rootfs tarball (as a one-layer base image) or an OCI archive.",
          {{"data-dir", "DIR", "root of the node's qufop data", kDefaultDataDir}});
  if (auto r = f.parse(argc, argv); !r) return report_fatal(prog, r.error().message, 2);
  if (f.help_requested()) {
    std::fputs(f.usage().c_str(), stdout);
    return 0;
  }
  if (f.positional().size() != 2) {
    return report_fatal(prog, "expected NAME[:TAG] and TAR (see --help)", 2);
  }
  const std::string& ref = f.positional()[0];
  const std::string& tar = f.positional()[1];
  std::string dir = images_dir(f.get("data-dir"));
  if (auto r = make_dirs(dir, 0755); !r) return report_fatal(prog, r.error().message);
  auto store = OciStore::open(dir);
  if (!store) return report_fatal(prog, store.error().message);
  auto manifest = import_image(*store, ref, tar, dir + "/.import");
  if (!manifest) return report_fatal(prog, manifest.error().wrap("import " + tar).message);
  std::printf("imported %s as %s (%s)\n", tar.c_str(), ref.c_str(), manifest->digest.c_str());
  return 0;
}

namespace {

// "name:tag" -> {name, tag}; the tag defaults to "latest". A ':' before the last '/' belongs to
// a host, not a tag.
std::pair<std::string, std::string> split_name_tag(const std::string& ref) {
  size_t slash = ref.rfind('/');
  size_t colon = ref.rfind(':');
  if (colon == std::string::npos || (slash != std::string::npos && colon < slash)) {
    return {ref, "latest"};
  }
  return {ref.substr(0, colon), ref.substr(colon + 1)};
}

// push and pull share their command line: REF REGISTRY_HOST:PORT plus flags.
struct RegistryCommand {
  Flags flags;
  std::string ref;
  HostPort registry;
};

// The parsed command, or the exit code to leave with (0 after --help, 2 for a usage error).
std::variant<RegistryCommand, int> parse_registry_command(const char* prog, std::string usage,
                                                          std::vector<FlagSpec> specs, int argc,
                                                          const char* const* argv) {
  Flags f(prog, std::move(usage), std::move(specs));
  if (auto r = f.parse(argc, argv); !r) return report_fatal(prog, r.error().message, 2);
  if (f.help_requested()) {
    std::fputs(f.usage().c_str(), stdout);
    return 0;
  }
  if (f.positional().size() != 2) {
    return report_fatal(prog, "expected NAME:TAG and REGISTRY_HOST:PORT (see --help)", 2);
  }
  auto registry = parse_host_port(f.positional()[1], false);
  if (!registry) return report_fatal(prog, registry.error().wrap("registry").message, 2);
  std::string ref = f.positional()[0];
  return RegistryCommand{std::move(f), std::move(ref), *registry};
}

}  // namespace

int push_main(int argc, const char* const* argv) {
  const char* prog = "qufop-builder push";
  auto parsed = parse_registry_command(
      prog,
      "usage: qufop-builder push NAME:TAG REGISTRY_HOST:PORT [--data-dir DIR] [--as NAME:TAG]\n"
      "Pushes a local image to a registry over the distribution API (plain HTTP).",
      {{"data-dir", "DIR", "root of the node's qufop data", kDefaultDataDir},
       {"as", "NAME:TAG", "the name and tag in the registry (default: the local ones)", ""}},
      argc, argv);
  if (auto* code = std::get_if<int>(&parsed)) return *code;
  auto& [f, ref, registry] = std::get<RegistryCommand>(parsed);
  std::string as = f.get("as").empty() ? ref : f.get("as");
  if (as.find('@') != std::string::npos) return report_fatal(prog, "--as: expected NAME:TAG", 2);
  auto [name, tag] = split_name_tag(as);
  auto store = OciStore::open(images_dir(f.get("data-dir")));
  if (!store) return report_fatal(prog, store.error().message);
  auto pushed = push_image(*store, ref, registry, name, tag);
  if (!pushed) return report_fatal(prog, pushed.error().message);
  std::printf("pushed %s to %s/%s:%s (%s; %zu blobs uploaded, %zu already there)\n", ref.c_str(),
              registry.str().c_str(), name.c_str(), tag.c_str(), pushed->manifest.digest.c_str(),
              pushed->blobs_uploaded, pushed->blobs_present);
  return 0;
}

int pull_main(int argc, const char* const* argv) {
  const char* prog = "qufop-builder pull";
  auto parsed = parse_registry_command(
      prog,
      "usage: qufop-builder pull NAME:TAG REGISTRY_HOST:PORT [--data-dir DIR] [--cache DIR]\n"
      "Pulls an image from a registry (plain HTTP) into the local store and unpacks its layers.",
      {{"data-dir", "DIR", "root of the node's qufop data", kDefaultDataDir},
       {"cache", "DIR", "the layer cache (default: DATA_DIR/builder/layers)", ""}},
      argc, argv);
  if (auto* code = std::get_if<int>(&parsed)) return *code;
  auto& [f, ref, registry] = std::get<RegistryCommand>(parsed);
  std::string name = ref, reference = "latest";
  if (auto at = ref.find('@'); at != std::string::npos) {
    name = ref.substr(0, at);
    reference = ref.substr(at + 1);
  } else {
    std::tie(name, reference) = split_name_tag(ref);
  }
  std::string dir = images_dir(f.get("data-dir"));
  if (auto r = make_dirs(dir, 0755); !r) return report_fatal(prog, r.error().message);
  auto store = OciStore::open(dir);
  if (!store) return report_fatal(prog, store.error().message);
  std::string cache =
      f.get("cache").empty() ? f.get("data-dir") + "/builder/layers" : f.get("cache");
  Puller puller(*store, cache);
  auto pulled = puller.pull(registry, name, reference);
  if (!pulled) return report_fatal(prog, pulled.error().message);
  std::printf("pulled %s from %s (%s; %zu blobs fetched, %zu layers)\n", ref.c_str(),
              registry.str().c_str(), pulled->manifest.digest.c_str(), pulled->blobs_fetched,
              pulled->layer_dirs.size());
  return 0;
}

int run(const DaemonOptions& options) {
  const std::string& binary = options.info.binary;
  const Flags& f = options.flags;
  BuildOptions bo;
  bo.state_dir = options.state_dir();
  if (bo.state_dir.empty() || bo.state_dir[0] != '/') {
    std::error_code ec;
    bo.state_dir = std::filesystem::absolute(bo.state_dir, ec).string();
  }
  bo.init_path = f.get("init");
  auto timeout = parse_duration(f.get("build-timeout"));
  if (!timeout) return report_fatal(binary, timeout.error().wrap("--build-timeout").message, 2);
  bo.timeout = *timeout;
  auto memory = parse_size(f.get("build-memory"));
  if (!memory) return report_fatal(binary, memory.error().wrap("--build-memory").message, 2);
  bo.memory_bytes = *memory;
  char* end = nullptr;
  bo.cpus = std::strtod(f.get("build-cpus").c_str(), &end);
  if (*end != '\0' || !(bo.cpus > 0)) {
    return report_fatal(binary, "--build-cpus: expected a number > 0", 2);
  }
  auto max_builds = f.get_int("max-builds", 1, 64);
  if (!max_builds) return report_fatal(binary, max_builds.error().message, 2);
  auto max_upload = parse_size(f.get("max-upload"));
  if (!max_upload) return report_fatal(binary, max_upload.error().wrap("--max-upload").message, 2);
  std::string images = images_dir(options.data_dir);
  if (auto r = make_dirs(images, 0755); !r) {
    return report_fatal(binary, "data dir: " + r.error().message);
  }
  auto store = OciStore::open(images);
  if (!store) return report_fatal(binary, store.error().message);
  auto builder = Builder::open(*store, bo);
  if (!builder) return report_fatal(binary, "data dir: " + builder.error().message);
  // The upload arrives as one request body (held in memory while it is extracted): allow
  // compressed uploads up to --max-request, and a slow link the time to send them.
  auto max_request = parse_size(f.get("max-request"));
  if (!max_request) {
    return report_fatal(binary, max_request.error().wrap("--max-request").message, 2);
  }
  http::ServerOptions server_options;
  server_options.max_body_bytes = *max_request;
  server_options.body_timeout = std::chrono::minutes(10);
  Daemon daemon(options, 2, server_options);
  ServiceOptions so;
  so.upload_dir = bo.state_dir + "/uploads";
  so.join_token = f.get("join-token");
  so.join_token_file = options.data_dir + "/scheduler/join-token";
  so.max_builds = static_cast<int>(*max_builds);
  so.upload_limits.max_bytes = *max_upload;
  Service service(daemon.server(), **builder, so);
  daemon.on_stop([&service] { service.shutdown(); });
  return daemon.run();
}

}  // namespace qufop::builder
