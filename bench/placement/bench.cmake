# bench/placement (included from bench/CMakeLists.txt): the placement core on 10,000 simulated
# nodes (bench/placement/run builds it in release and runs it).
add_executable(qufop_placement_bench placement/placement_bench.cc)
target_link_libraries(qufop_placement_bench PRIVATE qufop_placement)
