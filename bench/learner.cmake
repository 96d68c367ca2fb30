# bench_learner: any algorithm's updates/s at HalfCheetah sizes; bench/learner.sh and
# bench/learner_vmbpo.sh compare them with PyTorch.
if(TARGET ember_learner)
  add_executable(bench_learner ${CMAKE_CURRENT_SOURCE_DIR}/bench_learner.c)
  target_link_libraries(bench_learner PRIVATE ember_learner)
  set_target_properties(bench_learner PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
endif()
