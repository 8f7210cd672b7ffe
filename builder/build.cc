#include "builder/build.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <deque>
#include <sstream>
#include <system_error>
#include <thread>

#include "builder/layer.h"
#include "builder/puller.h"
#include "noded/cgroup.h"
#include "noded/mounts.h"
#include "noded/sandbox.h"
#include "noded/seccomp.h"
#include "noded/stop_wait.h"

namespace qufop::builder {

namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxLogLine = 4096;

std::string shell_quote(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string ms_text(std::chrono::milliseconds ms) { return std::to_string(ms.count()) + "ms"; }

std::string cpu_text(double cpus) {
  std::ostringstream os;
  os << cpus;
  return os.str();
}

void set_env(std::vector<std::string>& env, const std::string& key, const std::string& value) {
  std::string prefix = key + "=";
  for (auto& e : env) {
    if (e.compare(0, prefix.size(), prefix) == 0) {
      e = prefix + value;
      return;
    }
  }
  env.push_back(prefix + value);
}

// Reads the sandbox's output pipe into lines for the LogFn, keeping the last ones.
class OutputReader {
 public:
  OutputReader(int fd, const LogFn& log, size_t keep) : fd_(fd), log_(log), keep_(keep) {}
  ~OutputReader() {
    join();
    ::close(fd_);
  }
  void start() {
    thread_ = std::thread([this] { loop(); });
  }
  void join() {
    if (thread_.joinable()) thread_.join();
  }
  const std::deque<std::string>& tail() const { return tail_; }

 private:
  void emit(std::string line) {
    if (log_) log_(line);
    tail_.push_back(std::move(line));
    while (tail_.size() > keep_) tail_.pop_front();
  }
  void loop() {
    std::string pending;
    char buf[8192];
    for (;;) {
      ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      pending.append(buf, static_cast<size_t>(n));
      size_t start = 0;
      for (;;) {
        size_t nl = pending.find('\n', start);
        if (nl == std::string::npos) break;
        emit(pending.substr(start, nl - start));
        start = nl + 1;
      }
      pending.erase(0, start);
      while (pending.size() > kMaxLogLine) {
        emit(pending.substr(0, kMaxLogLine));
        pending.erase(0, kMaxLogLine);
      }
    }
    if (!pending.empty()) emit(std::move(pending));
  }

  int fd_;
  const LogFn& log_;
  size_t keep_;
  std::deque<std::string> tail_;
  std::thread thread_;
};

// Puts the upload at <layer_dir>/src for the build, and back where it was afterwards. A rename
// when both are on one file system, else a copy (removed afterwards).
class UploadLayer {
 public:
  static Result<std::unique_ptr<UploadLayer>> make(const fs::path& upload, const fs::path& dir) {
    std::unique_ptr<UploadLayer> u(new UploadLayer(upload, dir));
    std::error_code ec;
    fs::create_directory(dir, ec);
    if (ec) return Error::io("mkdir " + dir.string() + ": " + ec.message());
    ::chmod(dir.c_str(), 0755);
    fs::path src = dir / "src";
    if (::rename(upload.c_str(), src.c_str()) == 0) {
      u->moved_ = true;
    } else if (errno == EXDEV) {
      fs::copy(upload, src, fs::copy_options::recursive | fs::copy_options::copy_symlinks, ec);
      if (ec) return Error::io("copy upload to " + src.string() + ": " + ec.message());
    } else {
      return Error::sys("rename(" + upload.string() + ")", errno);
    }
    ::chmod(src.c_str(), 0755);
    return u;
  }
  ~UploadLayer() {
    std::error_code ec;
    if (moved_) (void)::rename((dir_ / "src").c_str(), upload_.c_str());
    fs::remove_all(dir_, ec);
  }
  const fs::path& dir() const { return dir_; }

 private:
  UploadLayer(fs::path upload, fs::path dir) : upload_(std::move(upload)), dir_(std::move(dir)) {}
  fs::path upload_;
  fs::path dir_;
  bool moved_ = false;
};

std::atomic<uint64_t> g_build_counter{0};

}  // namespace

std::string build_shell_script(const std::vector<std::string>& lines) {
  std::string script;
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string q = shell_quote(lines[i]);
    script += "printf '+ %s\\n' " + q + "\n";
    script += "/bin/sh -c " + q + " || { rc=$?; echo \"build_script line " + std::to_string(i + 1) +
              " failed with exit code $rc\" >&2; exit $rc; }\n";
  }
  return script;
}

ImageConfig build_config(const ImageConfig& base, const Descriptor& d) {
  ImageConfig c = base;
  if (c.architecture.empty()) c.architecture = host_architecture();
  if (c.os.empty()) c.os = "linux";
  c.entrypoint = d.run;
  c.cmd.clear();
  for (const auto& [k, v] : d.env) set_env(c.env, k, v);
  set_env(c.env, "PORT", std::to_string(d.port));
  if (c.working_dir.empty()) c.working_dir = "/";
  c.exposed_ports = {std::to_string(d.port) + "/tcp"};
  c.labels["org.qufop.port"] = std::to_string(d.port);
  if (!d.health.empty()) c.labels["org.qufop.health"] = d.health;
  if (d.cpu > 0) c.labels["org.qufop.cpu"] = cpu_text(d.cpu);
  if (d.memory > 0) c.labels["org.qufop.memory"] = std::to_string(d.memory);
  c.labels["org.qufop.stop_wait"] = ms_text(d.stop_wait);
  c.labels["org.qufop.warmup"] = ms_text(d.warmup);
  c.labels["org.qufop.readonly"] = d.readonly ? "true" : "false";
  return c;
}

Builder::Builder(OciStore store, BuildOptions options)
    : store_(std::move(store)), options_(std::move(options)) {}
Builder::~Builder() = default;

Result<std::unique_ptr<Builder>> Builder::open(const OciStore& store, BuildOptions options) {
  if (options.state_dir.empty() || options.state_dir[0] != '/') {
    return Error::invalid("builder state dir '" + options.state_dir + "' is not absolute");
  }
  if (options.init_path.empty()) options.init_path = noded::default_init_path();
  if (options.seccomp_cache.empty()) options.seccomp_cache = options.state_dir + "/seccomp";
  for (const char* sub : {"/layers", "/run", "/seccomp"}) {
    std::error_code ec;
    fs::create_directories(options.state_dir + sub, ec);
    if (ec) return Error::io("mkdir " + options.state_dir + sub + ": " + ec.message());
  }
  std::unique_ptr<Builder> b(new Builder(store, std::move(options)));
  auto prog = noded::load_or_build_default_profile(b->options_.seccomp_cache);
  if (!prog) return prog.error().wrap("seccomp profile");
  b->seccomp_ = std::make_unique<noded::SeccompProgram>(std::move(*prog));
  // Without cgroups (not root, no cgroupfs) the builder still serves images; builds say why
  // they cannot run.
  auto cg = noded::make_cgroup_manager();
  if (cg) {
    b->cgroups_ = std::move(*cg);
  } else {
    b->cgroups_error_ = cg.error().message;
    spdlog::warn("builds are disabled: cgroups: {}", b->cgroups_error_);
  }
  return b;
}

Result<std::string> Builder::cached_layer(std::string_view digest) {
  return builder::cached_layer(store_, options_.state_dir + "/layers", digest);
}

Result<BuildResult> Builder::build(const Descriptor& d, const fs::path& upload,
                                   std::string_view ufop, std::string_view version,
                                   const LogFn& log) {
  auto say = [&](const std::string& line) {
    if (log) log(line);
  };
  std::string ref = std::string(ufop) + ":" + std::string(version);
  if (auto r = parse_image_ref(ref); !r || !r->digest.empty() || r->scratch) {
    return Error::invalid("image name '" + ref + "' is not a valid NAME:TAG");
  }
  if (!fs::is_directory(upload)) return Error::invalid("upload " + upload.string() + " is no dir");

  // The base.
  ImageConfig base_config;
  Manifest base;
  if (!d.image.scratch) {
    auto m = store_.resolve(d.image.str());
    if (!m) {
      return Error{"not_found",
                   "base image '" + d.image.str() +
                       "' is not in the builder's store (qufop-builder import it first): " +
                       m.error().message,
                   0};
    }
    say("base " + d.image.str() + " " + m->digest);
    auto man = store_.read_manifest(m->digest);
    if (!man) return man.error().wrap("base manifest");
    base = std::move(*man);
    auto cfg = store_.read_config(base.config.digest);
    if (!cfg) return cfg.error().wrap("base config");
    base_config = std::move(*cfg);
  } else if (!d.build_script.empty()) {
    return Error::invalid("base 'scratch' has no /bin/sh to run build_script with");
  }
  ImageConfig config = build_config(base_config, d);
  Manifest manifest;
  manifest.layers = base.layers;

  if (!d.build_script.empty()) {
    if (!cgroups_) {
      return Error{"unavailable", "this builder cannot run builds: cgroups: " + cgroups_error_, 0};
    }
    std::vector<std::string> layers;  // top first
    for (auto it = base.layers.rbegin(); it != base.layers.rend(); ++it) {
      auto dir = cached_layer(it->digest);
      if (!dir) return dir.error();
      layers.push_back(*dir);
    }
    uint64_t n = ++g_build_counter;
    std::string id = "qf-build-" + std::to_string(::getpid()) + "-" + std::to_string(n);
    std::string run_dir = options_.state_dir + "/run/" + id;
    auto src = UploadLayer::make(upload, run_dir + ".src");
    if (!src) return src.error().wrap("upload");
    layers.insert(layers.begin(), (*src)->dir().string());

    noded::SandboxSpec spec;
    spec.id = id;
    spec.layers = std::move(layers);
    spec.run_dir = run_dir;
    spec.argv = {"/bin/sh", "-c", build_shell_script(d.build_script)};
    spec.env = config.env;
    bool has_home = std::any_of(spec.env.begin(), spec.env.end(),
                                [](const std::string& e) { return e.rfind("HOME=", 0) == 0; });
    if (!has_home) spec.env.push_back("HOME=/root");
    spec.workdir = "/";
    spec.hostname = "qufop-build";
    spec.uid = 0;
    spec.gid = 0;
    spec.keep_capabilities = {"CAP_CHOWN",  "CAP_DAC_OVERRIDE", "CAP_FOWNER",
                              "CAP_FSETID", "CAP_SETUID",       "CAP_SETGID"};
    spec.net = noded::NetMode::kNone;
    spec.limits.cpus = options_.cpus;
    spec.limits.memory_bytes = options_.memory_bytes;
    spec.limits.pids = options_.pids;
    spec.stop_wait = options_.stop_wait;
    spec.cgroup_parent = options_.cgroup_parent;

    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) != 0) return Error::sys("pipe2", errno);
    OutputReader reader(pipefd[0], log, options_.log_tail_lines);
    noded::StartOptions so;
    so.cgroups = cgroups_.get();
    so.seccomp = seccomp_.get();
    so.init_path = options_.init_path;
    so.stdout_fd = pipefd[1];
    so.stderr_fd = pipefd[1];
    auto sb = noded::Sandbox::start(spec, so);
    ::close(pipefd[1]);
    if (!sb) return sb.error().wrap("build sandbox");
    reader.start();
    auto status = (*sb)->wait(options_.timeout);
    bool timed_out = status && !status->has_value();
    std::optional<noded::ExitStatus> exit;
    if (timed_out) {
      auto stopped = noded::stop_wait(**sb, options_.stop_wait);
      (void)(*sb)->release();
      reader.join();
      (void)stopped;
      return Error{"deadline_exceeded",
                   "build of " + ref + " timed out after " + ms_text(options_.timeout), 0};
    }
    if (!status) {
      (void)(*sb)->release();
      reader.join();
      return status.error().wrap("build sandbox");
    }
    exit = **status;
    auto tail_text = [&] {
      reader.join();
      std::string t;
      for (const auto& l : reader.tail()) t += "\n  " + l;
      return t;
    };
    if (exit->oom_killed || exit->shell_code() != 0) {
      (void)(*sb)->release();
      std::string msg = "build_script of " + ref + " failed: " + exit->describe() + " (exit code " +
                        std::to_string(exit->shell_code()) + ")";
      if (exit->oom_killed) msg += ", out of memory";
      return Error{"build_failed", msg + "; last lines:" + tail_text(), exit->shell_code()};
    }
    // pid 1 is gone and with it the sandbox's mount namespace: the upper dir is complete.
    std::string upper = run_dir + "/upper";
    auto scanned = scan_tree(upper, true);
    Result<Layer> layer = Error::io("no layer");
    if (scanned) {
      std::erase_if(*scanned, [](const FsEntry& e) {
        return e.path == "src" || e.path.compare(0, 4, "src/") == 0;
      });
      LayerOptions lo;
      lo.overlay_upper = true;
      lo.preserve_owner = true;
      auto plan = plan_layer(std::move(*scanned), lo);
      if (plan) {
        layer = write_layer(store_, upper, *plan, lo);
      } else {
        layer = plan.error();
      }
    } else {
      layer = scanned.error();
    }
    auto released = (*sb)->release();
    reader.join();
    if (!layer) return layer.error().wrap("build layer");
    if (!released) return released.error().wrap("releasing the build sandbox");
    say("layer " + layer->blob.digest + " (" + std::to_string(layer->blob.size) + " bytes)");
    manifest.layers.push_back(layer->blob);
    config.diff_ids.push_back(layer->diff_id);
  }

  auto cfg = store_.put_config(config);
  if (!cfg) return cfg.error().wrap("config");
  manifest.config = *cfg;
  auto man = store_.put_manifest(manifest);
  if (!man) return man.error().wrap("manifest");
  if (auto r = store_.tag(ufop, version, *man); !r) return r.error().wrap("tag " + ref);
  say("image " + ref + " " + man->digest);
  return BuildResult{*man, ref};
}

}  // namespace qufop::builder
