// Capabilities by name and the drop to the sandbox's user, with raw capget/capset/prctl (libcap
// is not a dependency). The success path of drop_privileges allocates nothing: it runs in a
// child between fork and exec.
#include "noded/privileges.h"

#include <grp.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <string_view>

namespace qufop::noded {
namespace {

struct CapName {
  std::string_view name;  // without "CAP_"
  int value;
};

#define QF_CAP(name) \
  CapName { #name, CAP_##name }
// The kernel's list, in <linux/capability.h> order.
constexpr CapName kCaps[] = {
    QF_CAP(CHOWN),
    QF_CAP(DAC_OVERRIDE),
    QF_CAP(DAC_READ_SEARCH),
    QF_CAP(FOWNER),
    QF_CAP(FSETID),
    QF_CAP(KILL),
    QF_CAP(SETGID),
    QF_CAP(SETUID),
    QF_CAP(SETPCAP),
    QF_CAP(LINUX_IMMUTABLE),
    QF_CAP(NET_BIND_SERVICE),
    QF_CAP(NET_BROADCAST),
    QF_CAP(NET_ADMIN),
    QF_CAP(NET_RAW),
    QF_CAP(IPC_LOCK),
    QF_CAP(IPC_OWNER),
    QF_CAP(SYS_MODULE),
    QF_CAP(SYS_RAWIO),
    QF_CAP(SYS_CHROOT),
    QF_CAP(SYS_PTRACE),
    QF_CAP(SYS_PACCT),
    QF_CAP(SYS_ADMIN),
    QF_CAP(SYS_BOOT),
    QF_CAP(SYS_NICE),
    QF_CAP(SYS_RESOURCE),
    QF_CAP(SYS_TIME),
    QF_CAP(SYS_TTY_CONFIG),
    QF_CAP(MKNOD),
    QF_CAP(LEASE),
    QF_CAP(AUDIT_WRITE),
    QF_CAP(AUDIT_CONTROL),
    QF_CAP(SETFCAP),
    QF_CAP(MAC_OVERRIDE),
    QF_CAP(MAC_ADMIN),
    QF_CAP(SYSLOG),
    QF_CAP(WAKE_ALARM),
    QF_CAP(BLOCK_SUSPEND),
    QF_CAP(AUDIT_READ),
    QF_CAP(PERFMON),
    QF_CAP(BPF),
    QF_CAP(CHECKPOINT_RESTORE),
};
#undef QF_CAP
static_assert(std::size(kCaps) == CAP_LAST_CAP + 1,
              "a capability in <linux/capability.h> is missing from kCaps");

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::toupper(static_cast<unsigned char>(x)) ==
                  std::toupper(static_cast<unsigned char>(y));
         });
}

// Capability sets as the kernel's two 32-bit words (_LINUX_CAPABILITY_VERSION_3).
Result<void> set_caps(uint64_t effective, uint64_t permitted, uint64_t inheritable) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2];
  for (int i = 0; i < 2; ++i) {
    data[i].effective = static_cast<uint32_t>(effective >> (32 * i));
    data[i].permitted = static_cast<uint32_t>(permitted >> (32 * i));
    data[i].inheritable = static_cast<uint32_t>(inheritable >> (32 * i));
  }
  if (::syscall(SYS_capset, &header, data) != 0) return Error::sys("capset", errno);
  return ok();
}

Result<uint64_t> permitted_caps() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capget, &header, data) != 0) return Error::sys("capget", errno);
  return uint64_t{data[0].permitted} | (uint64_t{data[1].permitted} << 32);
}

Result<void> set_rlimits(const Limits& limits) {
  // 0 leaves a limit as is; a zero nofile would leave the program no descriptor at all.
  if (limits.nofile) {
    rlimit r{limits.nofile, limits.nofile};
    if (::setrlimit(RLIMIT_NOFILE, &r) != 0) return Error::sys("setrlimit(RLIMIT_NOFILE)", errno);
  }
  if (limits.nproc) {
    rlimit r{limits.nproc, limits.nproc};
    if (::setrlimit(RLIMIT_NPROC, &r) != 0) return Error::sys("setrlimit(RLIMIT_NPROC)", errno);
  }
  return ok();
}

// Every capability the running kernel knows that is not in `keep` leaves the bounding set, so
// no later exec (of a file-capability binary, say) can bring it back. One call per capability:
// EINVAL from either call means the kernel knows no capability that high.
Result<void> shrink_bounding_set(uint64_t keep) {
  for (int cap = 0; cap < 64; ++cap) {
    bool kept = keep & (uint64_t{1} << cap);
    if (::prctl(kept ? PR_CAPBSET_READ : PR_CAPBSET_DROP, cap, 0, 0, 0) >= 0) continue;
    if (errno == EINVAL) break;
    return Error::sys("prctl(PR_CAPBSET_DROP)", errno);
  }
  return ok();
}

Result<void> set_ambient(const std::vector<int>& keep) {
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) {
    return Error::sys("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", errno);
  }
  for (int cap : keep) {
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0) {
      return Error::sys("prctl(PR_CAP_AMBIENT_RAISE)", errno);
    }
  }
  return ok();
}

}  // namespace

Result<std::vector<int>> parse_capabilities(const std::vector<std::string>& names) {
  std::vector<int> caps;
  for (const std::string& raw : names) {
    std::string_view name = raw;
    if (name.size() > 4 && iequals(name.substr(0, 4), "CAP_")) name.remove_prefix(4);
    auto it = std::find_if(std::begin(kCaps), std::end(kCaps),
                           [&](const CapName& c) { return iequals(c.name, name); });
    if (it == std::end(kCaps)) return Error::invalid("unknown capability '" + raw + "'");
    if (std::find(caps.begin(), caps.end(), it->value) == caps.end()) caps.push_back(it->value);
  }
  return caps;
}

Result<void> drop_privileges(uint32_t uid, uint32_t gid, const std::vector<int>& keep,
                             const Limits& limits) {
  uint64_t keep_mask = 0;
  for (int cap : keep) {
    if (cap < 0 || cap > CAP_LAST_CAP) return Error::invalid("capability number out of range");
    keep_mask |= uint64_t{1} << cap;
  }
  // rlimits first: raising a hard limit needs CAP_SYS_RESOURCE, gone below.
  QF_TRY(set_rlimits(limits));
  // Supplementary groups, then the gid: both need CAP_SETGID, which the uid change takes away.
  gid_t groups[1] = {gid};
  if (::setgroups(1, groups) != 0) return Error::sys("setgroups", errno);
  if (::setresgid(gid, gid, gid) != 0) return Error::sys("setresgid", errno);
  // Leaving uid 0 clears the permitted set unless KEEPCAPS is on, and `keep` must survive it.
  if (::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) return Error::sys("prctl(PR_SET_KEEPCAPS)", errno);
  // Real, effective and saved: no uid 0 is left to switch back to.
  if (::setresuid(uid, uid, uid) != 0) return Error::sys("setresuid", errno);
  // The uid change emptied the effective set; shrinking the bounding set needs CAP_SETPCAP in
  // it, so raise what is still permitted for that one step.
  auto permitted = permitted_caps();
  if (!permitted.ok()) return permitted.error();
  QF_TRY(set_caps(*permitted, *permitted, 0));
  QF_TRY(shrink_bounding_set(keep_mask));
  // Down to `keep` everywhere; inheritable too, as ambient caps must be permitted + inheritable.
  QF_TRY(set_caps(keep_mask, keep_mask, keep_mask));
  // Ambient: how a non-root program keeps capabilities across execve without file caps.
  QF_TRY(set_ambient(keep));
  if (::prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0) return Error::sys("prctl(PR_SET_KEEPCAPS)", errno);
  // Last: nothing the program execs (setuid, file caps) can raise privileges again.
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return Error::sys("prctl(PR_SET_NO_NEW_PRIVS)", errno);
  }
  return ok();
}

}  // namespace qufop::noded
