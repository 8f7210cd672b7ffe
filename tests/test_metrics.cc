#include <gtest/gtest.h>

#include "common/metrics.h"

namespace qufop {
namespace {

TEST(Metrics, RendersPrometheusText) {
  Metrics m;
  m.describe("qufop_requests_total", Metrics::Type::kCounter, "Requests.");
  m.add("qufop_requests_total", "code=\"200\"");
  m.add("qufop_requests_total", "code=\"200\"", 2);
  m.describe("qufop_queue", Metrics::Type::kGauge, "Queue length.");
  m.set("qufop_queue", "", 1.5);
  m.set_callback("qufop_queue", "ufop=\"a\"", [] { return 7.0; });
  EXPECT_EQ(m.value("qufop_requests_total", "code=\"200\""), 3);
  EXPECT_EQ(m.render(),
            "# HELP qufop_queue Queue length.\n"
            "# TYPE qufop_queue gauge\n"
            "qufop_queue 1.5\n"
            "qufop_queue{ufop=\"a\"} 7\n"
            "# HELP qufop_requests_total Requests.\n"
            "# TYPE qufop_requests_total counter\n"
            "qufop_requests_total{code=\"200\"} 3\n");
}

}  // namespace
}  // namespace qufop
