# gate tests (included from tests/CMakeLists.txt): the pure parts (balancer and warm-up weights,
# token buckets per user and per client address, replay set, queue, access, routing table from
# keeper records) as unit tests; the daemon on loopback with test backends and a real
# qufop-keeper as e2e tests.
add_executable(qufop_gate_unit_tests test_gate_unit.cc)
target_link_libraries(qufop_gate_unit_tests PRIVATE qufop_gate GTest::gtest_main)
gtest_discover_tests(qufop_gate_unit_tests PROPERTIES LABELS unit DISCOVERY_TIMEOUT 60)

add_executable(qufop_gate_e2e_tests test_gate_e2e.cc keeper_backends.cc process.cc)
target_link_libraries(qufop_gate_e2e_tests PRIVATE qufop_gate GTest::gtest_main)
target_compile_definitions(qufop_gate_e2e_tests PRIVATE QUFOP_BINARY_DIR="${CMAKE_BINARY_DIR}")
add_dependencies(qufop_gate_e2e_tests qufop-gate qufop-keeper)
gtest_discover_tests(qufop_gate_e2e_tests PROPERTIES LABELS e2e DISCOVERY_TIMEOUT 60)
# Records are built with designated initializers that leave the other fields at their defaults.
target_compile_options(qufop_gate_unit_tests PRIVATE -Wno-missing-field-initializers)
target_compile_options(qufop_gate_e2e_tests PRIVATE -Wno-missing-field-initializers)
