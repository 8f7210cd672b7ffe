# bench/scaleout (included from bench/CMakeLists.txt): resize 0->50 of a busybox UFOP on one real
# node until all 50 answer; bench/scaleout/run starts the daemons and runs this timer.
add_executable(qufop_scaleout_bench scaleout/scaleout_bench.cc)
target_link_libraries(qufop_scaleout_bench PRIVATE qufop_common)
