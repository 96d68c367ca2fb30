# bench_actor: the actor loop's env steps/s with a 2x256 policy in it, against bare env stepping with
# random actions at the same K, measured in the same run (make bench-actor).
if(TARGET ember_actor)
  add_executable(bench_actor ${CMAKE_CURRENT_SOURCE_DIR}/bench_actor.c)
  target_link_libraries(bench_actor PRIVATE ember_actor)
  set_target_properties(bench_actor PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
endif()
