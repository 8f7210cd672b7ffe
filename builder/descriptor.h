// The UFOP descriptor, ufop.yaml (vendor-docs/ufop-yaml.md): parsed with yaml-cpp into a typed
// Descriptor. Pure: no file system access except load_descriptor. Every refusal names the line
// and the key: "ufop.yaml:7: key 'memroy': unknown key (did you mean 'memory'?)".
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace qufop::builder {

// An image reference: "scratch", NAME[:TAG], NAME@sha256:HEX or NAME:TAG@sha256:HEX, where NAME
// may carry a registry host ("registry.local:5000/team/base").
struct ImageRef {
  bool scratch = false;
  std::string name;    // "busybox", "registry.local:5000/team/base"
  std::string tag;     // "latest" when neither tag nor digest is given; may be empty with digest
  std::string digest;  // "sha256:<64 hex>" or empty

  // "busybox:latest", "base@sha256:…", "scratch".
  std::string str() const;
};

// Parses an image reference; the error says what is wrong ("tag 'a b' has invalid characters").
Result<ImageRef> parse_image_ref(std::string_view text);

struct Descriptor {
  ImageRef image;
  std::vector<std::string> build_script;  // each run with /bin/sh -c, in order
  std::vector<std::string> run;           // argv of the instance; never passed to a shell
  std::vector<std::pair<std::string, std::string>> env;  // in the order given
  int port = 9100;
  std::string health;   // HTTP path such as "/health"; empty: TCP connect only
  double cpu = 0;       // fractional cpus; 0: not set (the cluster default applies)
  uint64_t memory = 0;  // bytes; 0: not set
  std::chrono::milliseconds stop_wait{10'000};
  std::chrono::milliseconds warmup{0};
  bool readonly = false;  // read-only root file system
};

// Limits checked by the parser (documented in vendor-docs/ufop-yaml.md).
inline constexpr double kMaxCpu = 64;
inline constexpr uint64_t kMinMemory = 4ull << 20;
inline constexpr uint64_t kMaxMemory = 1ull << 40;
inline constexpr std::chrono::milliseconds kMaxStopWait{10 * 60'000};
inline constexpr std::chrono::milliseconds kMaxWarmup{60 * 60'000};
inline constexpr size_t kMaxDescriptorBytes = 64 << 10;

// Parses the text of a descriptor; `file` names it in errors ("ufop.yaml:3: …").
Result<Descriptor> parse_descriptor(std::string_view text, std::string_view file = "ufop.yaml");
// Reads and parses a descriptor file (at most kMaxDescriptorBytes).
Result<Descriptor> load_descriptor(const std::filesystem::path& path);

// Helpers, exposed for tests and for flags that take the same syntax.
// Splits a command line into argv as a POSIX shell would split words: blanks separate, '…' is
// literal, "…" honours \" \\ \$ \` and \newline, a backslash outside quotes escapes the next
// character. No expansion: unquoted | & ; < > ( ) ` $ are refused, since nothing runs a shell.
Result<std::vector<std::string>> split_command(std::string_view line);
// "64m", "1G", "512MiB", "4194304" -> bytes (binary units).
Result<uint64_t> parse_size(std::string_view text);
// "10s", "500ms", "1m30s", "2h" -> milliseconds. A bare number is refused (unit required).
Result<std::chrono::milliseconds> parse_duration(std::string_view text);
// The closest of `candidates` within an edit distance of 2 (transpositions count 1), or "".
std::string suggest(std::string_view word, const std::vector<std::string_view>& candidates);

}  // namespace qufop::builder
