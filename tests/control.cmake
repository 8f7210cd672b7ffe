# The control plane end to end: the scheduler process against a real keeper, with in-test nodes
# speaking the node protocol over real sockets.
add_executable(qufop_scheduler_e2e_tests test_scheduler_e2e.cc keeper_backends.cc process.cc)
target_link_libraries(qufop_scheduler_e2e_tests PRIVATE qufop_common GTest::gtest_main)
target_compile_definitions(qufop_scheduler_e2e_tests PRIVATE QUFOP_BINARY_DIR="${CMAKE_BINARY_DIR}")
add_dependencies(qufop_scheduler_e2e_tests qufop-keeper qufop-scheduler)
gtest_discover_tests(qufop_scheduler_e2e_tests PROPERTIES LABELS e2e DISCOVERY_TIMEOUT 60)
