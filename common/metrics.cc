#include "common/metrics.h"

#include <cmath>
#include <cstdio>

namespace qufop {
namespace {

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.17g", v);
  }
  return buf;
}

std::string series(const std::string& name, const std::string& labels) {
  return labels.empty() ? name : name + "{" + labels + "}";
}

}  // namespace

void Metrics::describe(std::string_view name, Type type, std::string_view help) {
  std::lock_guard lock(mu_);
  auto [it, inserted] = families_.try_emplace(std::string(name));
  if (inserted) {
    it->second.type = type;
    it->second.help = help;
  }
}

void Metrics::add(std::string_view name, std::string_view labels, double delta) {
  std::lock_guard lock(mu_);
  families_[std::string(name)].values[std::string(labels)] += delta;
}

void Metrics::set(std::string_view name, std::string_view labels, double value) {
  std::lock_guard lock(mu_);
  families_[std::string(name)].values[std::string(labels)] = value;
}

void Metrics::set_callback(std::string_view name, std::string_view labels,
                           std::function<double()> fn) {
  std::lock_guard lock(mu_);
  families_[std::string(name)].callbacks[std::string(labels)] = std::move(fn);
}

double Metrics::value(std::string_view name, std::string_view labels) const {
  std::lock_guard lock(mu_);
  auto f = families_.find(name);
  if (f == families_.end()) return 0;
  auto v = f->second.values.find(std::string(labels));
  return v == f->second.values.end() ? 0 : v->second;
}

std::string Metrics::render() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& [name, family] : families_) {
    if (!family.help.empty()) out += "# HELP " + name + " " + family.help + "\n";
    out += "# TYPE " + name + (family.type == Type::kCounter ? " counter\n" : " gauge\n");
    for (const auto& [labels, v] : family.values) {
      out += series(name, labels) + " " + format_value(v) + "\n";
    }
    for (const auto& [labels, fn] : family.callbacks) {
      out += series(name, labels) + " " + format_value(fn()) + "\n";
    }
  }
  return out;
}

}  // namespace qufop
