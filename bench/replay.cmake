# bench_replay: raw ZeroMQ vs the replay server's insert path, with sampling at the same time, and
# memory vs raw bytes (make bench-replay).
if(TARGET ember_replay)
  add_executable(bench_replay ${CMAKE_CURRENT_SOURCE_DIR}/bench_replay.c)
  target_link_libraries(bench_replay PRIVATE ember_replay)
  set_target_properties(bench_replay PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
endif()
