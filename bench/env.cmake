# bench_env: env steps/s per task and the ratio to bare mj_step on the same model (make bench-env).
if(TARGET ember_env)
  add_executable(bench_env ${CMAKE_CURRENT_SOURCE_DIR}/bench_env.c)
  target_link_libraries(bench_env PRIVATE ember_env)
  set_target_properties(bench_env PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
endif()
