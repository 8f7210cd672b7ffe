// qufop-init: pid 1 of every sandbox. A tiny static binary (libc only, no allocation) that the
// sandbox's first process execs from an fd opened on the host, so the image need not contain it.
// C, built against musl where Debian's musl-tools is installed: glibc's static start-up probes
// the CPU's caches with cpuid, which traps to the hypervisor in a VM (tenths of a millisecond
// per process there), and pid 1 starts with every sandbox.
//
//   qufop-init MAIN_PID STATUS_FD
//
// The main process (MAIN_PID, forked by this very process before its exec: a process keeps its
// children across exec) is already running. Init:
//   - reaps every zombie (orphans of the sandbox are re-parented to pid 1);
//   - forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 to the main process;
//   - when the main process exits, writes {kind, value} (two int32: kind 0 = exited with
//     value, 1 = killed by signal value) to STATUS_FD and exits with value (or 128 + signal).
//     The kernel then kills whatever is left in the pid namespace.
// The signals are blocked before the exec (the mask survives it) and taken with sigwaitinfo(),
// so one sent between the fork of the main process and this point is pending, not lost: pid 1
// ignores signals it has no handler for unless they are blocked.
#define _POSIX_C_SOURCE 200809L  // sigwaitinfo, kill

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static const int kForwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

static void say(const char* text) {
  size_t n = 0;
  while (text[n]) ++n;
  ssize_t ignored = write(2, text, n);
  (void)ignored;
}

static bool parse_int(const char* s, long* out) {
  if (!s || !*s) return false;
  char* end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < 0) return false;
  *out = v;
  return true;
}

_Noreturn static void finish(int status_fd, int wait_status) {
  int32_t report[2] = {0, 0};
  int code;
  if (WIFSIGNALED(wait_status)) {
    report[0] = 1;
    report[1] = WTERMSIG(wait_status);
    code = 128 + WTERMSIG(wait_status);
  } else {
    report[1] = WEXITSTATUS(wait_status);
    code = WEXITSTATUS(wait_status);
  }
  if (status_fd >= 0) {
    ssize_t ignored = write(status_fd, report, sizeof report);
    (void)ignored;
  }
  _exit(code);
}

int main(int argc, char** argv) {
  long main_pid = 0;
  long status_fd = -1;
  if (argc != 3 || !parse_int(argv[1], &main_pid) || main_pid < 1 ||
      !parse_int(argv[2], &status_fd)) {
    say("usage: qufop-init MAIN_PID STATUS_FD (started by qufop-noded, not by hand)\n");
    return 2;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  for (size_t i = 0; i < sizeof kForwarded / sizeof kForwarded[0]; ++i) {
    sigaddset(&set, kForwarded[i]);
  }
  // Already blocked by the sandbox before the exec; again in case init is run by hand.
  sigprocmask(SIG_BLOCK, &set, NULL);

  for (;;) {
    // Reap first: the main process may have exited before this process got here.
    for (;;) {
      int status = 0;
      pid_t pid = waitpid(-1, &status, WNOHANG);
      if (pid == (pid_t)main_pid) finish((int)status_fd, status);
      if (pid > 0) continue;  // an orphan: reaped, nothing else to do
      if (pid < 0 && errno == ECHILD) {
        say("qufop-init: the main process is gone without an exit status\n");
        _exit(255);
      }
      break;  // 0: children left, none exited
    }
    siginfo_t info;
    int sig = sigwaitinfo(&set, &info);
    if (sig < 0 || sig == SIGCHLD) continue;
    kill((pid_t)main_pid, sig);
  }
}
