# qufopctl tests (included from tests/CMakeLists.txt).

# Argument parsing, config, signing, the tar writer, tables; the commands against an in-process
# HTTP server on loopback that checks every signature (no daemons, no root).
add_executable(qufop_cli_unit_tests test_cli.cc)
target_link_libraries(qufop_cli_unit_tests PRIVATE qufop_cli GTest::gtest_main)
gtest_discover_tests(qufop_cli_unit_tests PROPERTIES LABELS unit DISCOVERY_TIMEOUT 60)

# examples/ufop-demo's handler under the host's busybox nc, its ufop.yaml through the builder's
# descriptor parser, and the real qufopctl binary, alone and against a real qufop-keeper and
# qufop-scheduler (e2e: spawns processes).
add_executable(qufop_cli_e2e_tests test_cli_e2e.cc keeper_backends.cc process.cc)
target_link_libraries(qufop_cli_e2e_tests PRIVATE qufop_cli qufop_builder qufop_keeper_client
                      GTest::gtest_main)
target_compile_definitions(qufop_cli_e2e_tests PRIVATE QUFOP_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
                           QUFOP_BINARY_DIR="${CMAKE_BINARY_DIR}")
add_dependencies(qufop_cli_e2e_tests qufopctl qufop-keeper qufop-scheduler)
gtest_discover_tests(qufop_cli_e2e_tests PROPERTIES LABELS e2e DISCOVERY_TIMEOUT 60)
