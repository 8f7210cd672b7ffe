// Plain-text tables and the small formatters qufopctl's listings use.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qufop::cli {

class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  // A row with fewer cells than the header is padded with "-"; extra cells are an invariant
  // violation (abort).
  void add(std::vector<std::string> row);
  // Columns left-aligned, two spaces apart, the last one not padded; an empty cell shows "-".
  std::string render() const;
  size_t rows() const { return rows_.size(); }

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// "42s", "7m", "3h", "5d" for how long ago `then_ms` was at `now_ms`; "-" when unknown (0).
std::string format_age(int64_t then_ms, int64_t now_ms);
// "512B", "64.0MiB", "2.0GiB".
std::string format_bytes(int64_t bytes);
// "0.5", "2", "-" from milli-CPUs.
std::string format_cpu(int64_t millis);

}  // namespace qufop::cli
