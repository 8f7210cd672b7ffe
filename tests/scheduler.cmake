# scheduler tests (included from tests/CMakeLists.txt)

# The pure placement and reconcile core (scheduler/placement.h, reconcile.h) and the simulated
# cluster over it: in-process fake nodes and a fake clock, no root, no daemons.
add_executable(qufop_scheduler_unit_tests
  test_scheduler_placement.cc
  test_scheduler_reconcile.cc
  test_scheduler_sim.cc
)
target_link_libraries(qufop_scheduler_unit_tests PRIVATE qufop_placement GTest::gtest_main)
gtest_discover_tests(qufop_scheduler_unit_tests PROPERTIES LABELS unit DISCOVERY_TIMEOUT 60)
