// A small Prometheus registry: counters and gauges with pre-rendered label sets, rendered in the
// text exposition format for /metrics. Thread-safe.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

namespace qufop {

class Metrics {
 public:
  enum class Type { kCounter, kGauge };

  // Declares a family once; later calls with the same name are ignored.
  void describe(std::string_view name, Type type, std::string_view help);
  // labels: rendered label pairs without braces, e.g. R"(code="200",method="GET")".
  void add(std::string_view name, std::string_view labels, double delta = 1);
  void set(std::string_view name, std::string_view labels, double value);
  // A gauge read when /metrics is rendered (e.g. open connections, queue length).
  void set_callback(std::string_view name, std::string_view labels, std::function<double()> fn);
  double value(std::string_view name, std::string_view labels) const;

  std::string render() const;

 private:
  struct Family {
    Type type = Type::kGauge;
    std::string help;
    std::map<std::string, double> values;
    std::map<std::string, std::function<double()>> callbacks;
  };
  mutable std::mutex mu_;
  std::map<std::string, Family, std::less<>> families_;
};

}  // namespace qufop
