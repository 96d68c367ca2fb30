# bench_pendulum_optimum: the optimal expected return on the pendulum (finite-horizon dynamic
# programming, its greedy policy played in the real env) and the scatter of 5- and 25-episode means.
if(TARGET ember_env)
  add_executable(bench_pendulum_optimum ${CMAKE_CURRENT_SOURCE_DIR}/bench_pendulum_optimum.c)
  target_link_libraries(bench_pendulum_optimum PRIVATE ember_env m)
  set_target_properties(bench_pendulum_optimum PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
endif()
