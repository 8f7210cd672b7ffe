// The default seccomp profile: Docker's default allowlist (moby profiles/seccomp/default.json,
// the rules that need no capability) made stricter, compiled with libseccomp into BPF once and
// cached by hash, so starting a sandbox costs one prctl.
//
// Stricter than Docker: ptrace and process_vm_* are denied (Docker allows them on >= 4.8), as are
// the io_uring calls (a large kernel surface, disabled by default since Docker 25); and only the
// native architecture is accepted: an i386 (int 0x80) or x32 syscall kills the process instead
// of being checked against a second syscall table, which would double the surface to audit.
#include "noded/seccomp.h"

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string_view>

#include "common/fd.h"
#include "common/files.h"

namespace qufop::noded {
namespace {

// Docker's unconditional allowlist, minus what this profile denies (see the file comment).
// Names the native arch does not have (chown32, socketcall, ...) resolve to nothing and are
// skipped, as in Docker, so the list reads the same on every arch.
constexpr std::string_view kAllowed[] = {
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "capget", "capset", "chdir",
    "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64", "clock_getres",
    "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat", "dup",
    "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
    "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat",
    "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate",
    "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchown", "fchown32", "fchownat", "fcntl",
    "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr",
    "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64",
    "futex", "futex_time64", "futex_waitv", "futimesat", "getcpu", "getcwd", "getdents",
    "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
    "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid",
    "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit",
    "get_robust_list", "getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area",
    "gettid", "gettimeofday", "getuid", "getuid32", "getxattr", "inotify_add_watch", "inotify_init",
    "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents",
    "io_pgetevents", "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit",
    "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self",
    "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr",
    "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise", "membarrier",
    "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock",
    "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink",
    "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap",
    "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open", "openat", "openat2",
    "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free",
    "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2",
    "prlimit64", "process_mrelease", "pselect6", "pselect6_time64", "pwrite64", "pwritev",
    "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom",
    "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "rename",
    "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
    "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
    "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr",
    "sched_getparam", "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr",
    "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget",
    "semop", "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg",
    "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
    "setgroups", "setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32",
    "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit",
    "set_robust_list", "setsid", "setsockopt", "set_thread_area", "set_tid_address", "setuid",
    "setuid32", "setxattr", "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack",
    "signalfd", "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair", "splice",
    "stat", "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync",
    "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete",
    "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64",
    "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
    "timerfd_settime64", "times", "tkill", "truncate", "truncate64", "ugetrlimit", "umask", "uname",
    "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64", "utimes", "vfork", "vmsplice",
    "wait4", "waitid", "waitpid", "write", "writev",
    // x86 only, as in Docker: thread-local storage setup and the LDT (wine, some runtimes).
    "arch_prctl", "modify_ldt"};

// Everything not allowed gets EPERM; these are the ones worth naming (tests, docs). Most need a
// capability the sandbox does not have anyway: the filter is the second wall.
// clang-format off
constexpr std::string_view kDenied[] = {
    "acct", "add_key", "bpf", "chroot", "clock_settime", "create_module", "delete_module",
    "fanotify_init", "finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms",
    "get_mempolicy", "init_module", "io_uring_enter", "io_uring_register", "io_uring_setup",
    "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mbind",
    "mount", "mount_setattr", "move_mount", "nfsservctl", "open_by_handle_at", "open_tree",
    "perf_event_open", "pidfd_getfd", "pivot_root", "process_madvise", "process_vm_readv",
    "process_vm_writev", "ptrace", "query_module", "quotactl", "quotactl_fd", "reboot",
    "request_key", "set_mempolicy", "setdomainname", "sethostname", "setns", "settimeofday",
    "swapoff", "swapon", "_sysctl", "syslog", "umount", "umount2", "unshare", "uselib",
    "userfaultfd", "vhangup", "vm86", "vm86old",
};
// clang-format on

// The clone flags that make namespaces (Docker's 2114060288): denied so a sandbox cannot build
// a user namespace and gain capabilities in it.
constexpr uint64_t kCloneNamespaceFlags = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS |
                                          CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
                                          CLONE_NEWNET;
constexpr uint64_t kAfVsock = 40;
// personality(2) values a normal program uses: PER_LINUX, PER_LINUX32, UNAME26 (and with 32),
// and the query 0xffffffff; anything else (READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE) is denied.
constexpr uint64_t kPersonalities[] = {0x0, 0x8, 0x20000, 0x20008, 0xffffffff};

// One argument-conditioned rule: allow `name` when arg0 <op> value (masked: arg0 & mask == 0).
struct ArgRule {
  std::string_view name;
  scmp_compare op;
  uint64_t a;
  uint64_t b;
};

std::vector<ArgRule> arg_rules() {
  std::vector<ArgRule> rules = {
      {"clone", SCMP_CMP_MASKED_EQ, kCloneNamespaceFlags, 0},
      {"socket", SCMP_CMP_NE, kAfVsock, 0},
  };
  for (uint64_t p : kPersonalities) rules.push_back({"personality", SCMP_CMP_EQ, p, 0});
  return rules;
}

// clone3 hides its flags behind a pointer seccomp cannot read: ENOSYS makes glibc fall back to
// clone, whose flags the rule above checks (EPERM would fail pthread_create instead).
constexpr std::string_view kEnosys[] = {"clone3"};

const char* arch_name(uint32_t arch) {
  switch (arch) {
    case SCMP_ARCH_X86_64:
      return "x86_64";
    case SCMP_ARCH_AARCH64:
      return "aarch64";
    case SCMP_ARCH_X86:
      return "x86";
    case SCMP_ARCH_RISCV64:
      return "riscv64";
    default:
      return "other";
  }
}

// The text the hash covers: every rule, the default and bad-arch actions, the arch and the
// libseccomp version (a new libseccomp may compile the same rules differently).
std::string definition_key() {
  const scmp_version* v = seccomp_version();
  uint32_t arch = seccomp_arch_native();
  std::string key = "qufop seccomp profile 1\n";
  key += "libseccomp " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
         std::to_string(v->micro) + "\n";
  key += "arch " + std::string(arch_name(arch)) + " " + std::to_string(arch) + "\n";
  key += "default errno " + std::to_string(EPERM) + "\nbadarch kill_process\noptimize 2\n";
  for (std::string_view name : kAllowed) key += "allow " + std::string(name) + "\n";
  for (const ArgRule& r : arg_rules()) {
    key += "allow " + std::string(r.name) + " if arg0 op" + std::to_string(r.op) + " " +
           std::to_string(r.a) + " " + std::to_string(r.b) + "\n";
  }
  for (std::string_view name : kEnosys)
    key += "errno " + std::to_string(ENOSYS) + " " + std::string(name) + "\n";
  return key;
}

// SHA-256 (FIPS 180-4), built in: the runner hashes a few KiB per start, and OpenSSL's first
// use (its config, its provider) would cost more than the rest of the profile's loading.
class Sha256 {
 public:
  void update(const uint8_t* p, size_t n) {
    bytes_ += n;
    while (n > 0) {
      size_t take = std::min(n, sizeof block_ - used_);
      std::memcpy(block_ + used_, p, take);
      used_ += take;
      p += take;
      n -= take;
      if (used_ == sizeof block_) {
        compress();
        used_ = 0;
      }
    }
  }
  std::array<uint8_t, 32> finish() {
    uint64_t bits = bytes_ * 8;
    uint8_t pad = 0x80;
    update(&pad, 1);
    pad = 0;
    while (used_ != 56) update(&pad, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    update(len, 8);
    std::array<uint8_t, 32> out;
    for (int i = 0; i < 8; ++i) {
      for (int j = 0; j < 4; ++j) out[4 * i + j] = static_cast<uint8_t>(h_[i] >> (24 - 8 * j));
    }
    return out;
  }

 private:
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void compress() {
    static constexpr uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) {
      w[i] = uint32_t{block_[4 * i]} << 24 | uint32_t{block_[4 * i + 1]} << 16 |
             uint32_t{block_[4 * i + 2]} << 8 | uint32_t{block_[4 * i + 3]};
    }
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t t1 =
          h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h_[0] += a;
    h_[1] += b;
    h_[2] += c;
    h_[3] += d;
    h_[4] += e;
    h_[5] += f;
    h_[6] += g;
    h_[7] += h;
  }

  uint32_t h_[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  uint8_t block_[64] = {};
  size_t used_ = 0;
  uint64_t bytes_ = 0;
};

std::string sha256_hex(std::string_view data) {
  Sha256 sha;
  sha.update(reinterpret_cast<const uint8_t*>(data.data()), data.size());
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (uint8_t b : sha.finish()) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 0xf]);
  }
  return out;
}

struct CtxRelease {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};
using Ctx = std::unique_ptr<void, CtxRelease>;

Error seccomp_error(const std::string& call, int rc) { return Error::sys(call, -rc); }

Result<void> add_rules(scmp_filter_ctx ctx) {
  for (std::string_view name : kAllowed) {
    int nr = seccomp_syscall_resolve_name(std::string(name).c_str());
    if (nr == __NR_SCMP_ERROR) continue;  // not a syscall libseccomp knows on any arch
    if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0); rc < 0) {
      return seccomp_error("seccomp_rule_add(" + std::string(name) + ")", rc);
    }
  }
  for (const ArgRule& r : arg_rules()) {
    int nr = seccomp_syscall_resolve_name(std::string(r.name).c_str());
    if (nr == __NR_SCMP_ERROR) continue;
    scmp_arg_cmp cmp = {0, r.op, r.a, r.b};
    if (int rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, 1, &cmp); rc < 0) {
      return seccomp_error("seccomp_rule_add(" + std::string(r.name) + ", arg0)", rc);
    }
  }
  for (std::string_view name : kEnosys) {
    int nr = seccomp_syscall_resolve_name(std::string(name).c_str());
    if (nr == __NR_SCMP_ERROR) continue;
    if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr, 0); rc < 0) {
      return seccomp_error("seccomp_rule_add(" + std::string(name) + ")", rc);
    }
  }
  return ok();
}

// libseccomp 2.5 exports only to a file descriptor (seccomp_export_bpf_mem is 2.6): a memfd.
Result<std::vector<uint8_t>> export_bpf(scmp_filter_ctx ctx) {
  Fd fd(::memfd_create("qufop-seccomp", MFD_CLOEXEC));
  if (fd.get() < 0) return Error::sys("memfd_create", errno);
  if (int rc = seccomp_export_bpf(ctx, fd.get()); rc < 0)
    return seccomp_error("seccomp_export_bpf", rc);
  off_t size = ::lseek(fd.get(), 0, SEEK_END);
  if (size < 0) return Error::sys("lseek(memfd)", errno);
  std::vector<uint8_t> bpf(static_cast<size_t>(size));
  if (::pread(fd.get(), bpf.data(), bpf.size(), 0) != size)
    return Error::sys("pread(memfd)", errno);
  return bpf;
}

Result<SeccompProgram> build(const std::string& key) {
  Ctx ctx(seccomp_init(SCMP_ACT_ERRNO(EPERM)));
  if (!ctx) return Error{"internal", "seccomp_init failed", 0};
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
      rc < 0) {
    return seccomp_error("seccomp_attr_set(ACT_BADARCH)", rc);
  }
  // A binary tree over the syscall numbers instead of a linear scan of ~300 allowed calls.
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2); rc < 0) {
    return seccomp_error("seccomp_attr_set(CTL_OPTIMIZE)", rc);
  }
  QF_TRY(add_rules(ctx.get()));
  auto bpf = export_bpf(ctx.get());
  if (!bpf.ok()) return bpf.error();
  if (bpf->empty() || bpf->size() % sizeof(sock_filter) != 0) {
    return Error{"internal", "libseccomp exported " + std::to_string(bpf->size()) + " bytes of BPF",
                 0};
  }
  return SeccompProgram{std::move(*bpf), sha256_hex(key)};
}

// Cache file: a text header, then the definition key, then the BPF. Loading checks the stored
// key against the wanted one and the BPF against its own sha256, so neither a stale profile nor
// a damaged file is ever installed.
constexpr std::string_view kMagic = "qufop-seccomp-cache 1\n";

std::string cache_bytes(const std::string& key, const SeccompProgram& p) {
  std::string_view bpf(reinterpret_cast<const char*>(p.bpf.data()), p.bpf.size());
  std::string out(kMagic);
  out += "hash " + p.hash + "\n";
  out += "bpf-sha256 " + sha256_hex(bpf) + "\n";
  out += "key-bytes " + std::to_string(key.size()) + "\n";
  out += "bpf-bytes " + std::to_string(bpf.size()) + "\n\n";
  out += key;
  out += bpf;
  return out;
}

// "name value\n" at `pos`; advances `pos`.
std::optional<std::string> header_field(std::string_view data, size_t& pos, std::string_view name) {
  size_t eol = data.find('\n', pos);
  if (eol == std::string_view::npos) return std::nullopt;
  std::string_view line = data.substr(pos, eol - pos);
  if (line.size() <= name.size() || !line.starts_with(name) || line[name.size()] != ' ') {
    return std::nullopt;
  }
  pos = eol + 1;
  return std::string(line.substr(name.size() + 1));
}

std::optional<size_t> to_size(const std::optional<std::string>& s) {
  if (!s || s->empty() || s->size() > 9 ||
      !std::all_of(s->begin(), s->end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  return std::stoul(*s);
}

// The program in a cache file's bytes, or why not. The stored definition must be `key` itself
// (compared, not hashed again: the file's name is already its hash).
Result<SeccompProgram> parse_cache(std::string_view data, const std::string& key,
                                   const std::string& hash) {
  auto bad = [](const std::string& why) { return Error{"invalid_argument", why, 0}; };
  if (!data.starts_with(kMagic)) return bad("not a qufop seccomp cache file");
  size_t pos = kMagic.size();
  auto file_hash = header_field(data, pos, "hash");
  auto bpf_sha = header_field(data, pos, "bpf-sha256");
  auto key_bytes = to_size(header_field(data, pos, "key-bytes"));
  auto bpf_bytes = to_size(header_field(data, pos, "bpf-bytes"));
  if (!file_hash || !bpf_sha || !key_bytes || !bpf_bytes || data.substr(pos, 1) != "\n") {
    return bad("bad header");
  }
  pos += 1;
  if (*file_hash != hash) return bad("profile hash " + *file_hash + ", want " + hash);
  if (*bpf_bytes == 0 || *bpf_bytes % sizeof(sock_filter) != 0) {
    return bad(std::to_string(*bpf_bytes) + " bytes of BPF is not a whole program");
  }
  if (data.size() - pos != *key_bytes + *bpf_bytes) return bad("size does not match the header");
  std::string_view stored_key = data.substr(pos, *key_bytes);
  std::string_view bpf = data.substr(pos + *key_bytes);
  if (stored_key != key) return bad("stored definition is not the profile hashing to " + hash);
  if (sha256_hex(bpf) != *bpf_sha) return bad("BPF does not match its sha256");
  return SeccompProgram{std::vector<uint8_t>(bpf.begin(), bpf.end()), hash};
}

// The cache file, made in `dir` (created when missing); a reader sees the old file or the
// whole new one.
Result<void> write_cache(const std::string& dir, const std::string& path,
                         const std::string& bytes) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Error::sys("mkdir(" + dir + ")", ec.value());
  return write_file_atomic(path, bytes, 0644);
}

}  // namespace

Result<SeccompProgram> build_default_profile() { return build(definition_key()); }

Result<SeccompProgram> load_or_build_default_profile(const std::string& cache_dir) {
  std::string key = definition_key();
  std::string hash = sha256_hex(key);
  std::string path = cache_dir + "/seccomp-" + hash + ".bpf";
  auto data = read_text_file(path);
  if (data.ok()) {
    auto cached = parse_cache(*data, key, hash);
    if (cached.ok()) return cached;
    spdlog::warn("seccomp cache {}: {}; rebuilding", path, cached.error().message);
  } else if (data.error().sys_errno != ENOENT) {
    spdlog::warn("seccomp cache: {}; rebuilding", data.error().message);
  }
  auto program = build(key);
  if (!program.ok()) return program.error();
  // A cache that cannot be written costs the next start a rebuild, not this one its start.
  if (auto w = write_cache(cache_dir, path, cache_bytes(key, *program)); !w.ok()) {
    spdlog::warn("seccomp cache: {}", w.error().message);
  }
  return program;
}

Result<void> install(const SeccompProgram& program) {
  size_t n = program.bpf.size() / sizeof(sock_filter);
  if (n == 0 || program.bpf.size() % sizeof(sock_filter) != 0 || n > USHRT_MAX) {
    return Error::invalid("seccomp program of " + std::to_string(program.bpf.size()) +
                          " bytes is not a BPF program");
  }
  // The vector's storage comes from operator new, aligned for sock_filter's 4-byte fields.
  sock_fprog prog{static_cast<unsigned short>(n),
                  reinterpret_cast<sock_filter*>(const_cast<uint8_t*>(program.bpf.data()))};
  if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) {
    return Error::sys("prctl(PR_SET_SECCOMP)", errno);
  }
  return ok();
}

const std::vector<std::string>& denied_syscalls() {
  static const std::vector<std::string> names(std::begin(kDenied), std::end(kDenied));
  return names;
}

}  // namespace qufop::noded
