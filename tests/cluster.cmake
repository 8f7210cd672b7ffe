# The whole control plane as root: keeper, scheduler, builder and three nodeds in network namespaces.
# Real processes only: resize and spread, a dead node healed, the scheduler SIGKILLed mid-resize,
# a noded SIGKILLed alone (live restore), a gray upgrade; nothing left on the host afterwards.
add_executable(qufop_cluster_e2e_tests test_cluster_e2e.cc keeper_backends.cc process.cc
               test_builder_build_util.cc)
target_link_libraries(qufop_cluster_e2e_tests PRIVATE qufop_common GTest::gtest_main)
target_compile_definitions(qufop_cluster_e2e_tests PRIVATE
                           QUFOP_BINARY_DIR="${CMAKE_BINARY_DIR}" QUFOP_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
add_dependencies(qufop_cluster_e2e_tests qufop-keeper qufop-scheduler qufop-noded qufop-init
                 qufop-builder)
gtest_discover_tests(qufop_cluster_e2e_tests PROPERTIES LABELS e2e DISCOVERY_TIMEOUT 60)
