// The default seccomp profile, compiled once with libseccomp and kept as exported BPF: noded
// holds it in memory, the one-shot runner caches it on disk by the profile's hash, so starting a
// sandbox only loads ready BPF (prctl/seccomp(2)), never rebuilds the filter.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace qufop::noded {

struct SeccompProgram {
  std::vector<uint8_t> bpf;  // struct sock_filter[]; bpf.size() % 8 == 0
  std::string hash;          // sha256 of the profile definition + libseccomp version + arch
};

// An allowlist at least as strict as Docker's default: everything else returns EPERM; mount,
// umount2, ptrace, kexec_*, init_module, finit_module, delete_module, bpf, keyctl, add_key,
// request_key, unshare, setns, pivot_root, reboot, swapon, swapoff, open_by_handle_at,
// perf_event_open, userfaultfd, … get EPERM.
Result<SeccompProgram> build_default_profile();
// build_default_profile() through a cache file "<cache_dir>/seccomp-<hash>.bpf" (atomic write).
Result<SeccompProgram> load_or_build_default_profile(const std::string& cache_dir);
// Installs the program in the calling thread (requires no_new_privs or CAP_SYS_ADMIN). Safe to
// call after fork in a child: no allocation.
Result<void> install(const SeccompProgram& program);
// The syscall names the default profile denies (for tests and docs).
const std::vector<std::string>& denied_syscalls();

}  // namespace qufop::noded
