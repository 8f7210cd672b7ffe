# bench/gate (included from bench/CMakeLists.txt): the tiny keep-alive backend that bench/gate/run
# puts behind qufop-gate and nginx.
add_executable(qufop_gate_bench_backend gate/backend.cc)
target_link_libraries(qufop_gate_bench_backend PRIVATE Threads::Threads)
