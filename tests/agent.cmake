# agent tests (included from tests/CMakeLists.txt)
# The node agent: its state machine over a fake runtime, resources, log rotation and the live
# restore records (unit); a real qufop-noded against an in-test scheduler and a real
# qufop-builder, in a network namespace of the test's own (e2e, as root).
add_executable(qufop_noded_agent_unit_tests test_noded_agent.cc)
target_link_libraries(qufop_noded_agent_unit_tests PRIVATE qufop_noded GTest::gtest_main)
gtest_discover_tests(qufop_noded_agent_unit_tests PROPERTIES LABELS unit DISCOVERY_TIMEOUT 60)

add_executable(qufop_noded_agent_e2e_tests test_noded_agent_e2e.cc process.cc
               test_builder_build_util.cc)
target_link_libraries(qufop_noded_agent_e2e_tests PRIVATE qufop_noded GTest::gtest_main)
target_compile_definitions(qufop_noded_agent_e2e_tests PRIVATE
                           QUFOP_BINARY_DIR="${CMAKE_BINARY_DIR}" QUFOP_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
add_dependencies(qufop_noded_agent_e2e_tests qufop-noded qufop-init qufop-builder)
gtest_discover_tests(qufop_noded_agent_e2e_tests PROPERTIES LABELS e2e DISCOVERY_TIMEOUT 60)
