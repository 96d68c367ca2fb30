# bench_learner_vmbpo: VMBPO updates/s at HalfCheetah sizes (bench/learner.sh compares it with
# PyTorch); bench_plot_runs: PNG curves for bench/learning.sh.
if(TARGET ember_learner)
  add_executable(bench_learner_vmbpo ${CMAKE_CURRENT_SOURCE_DIR}/bench_learner_vmbpo.c)
  target_link_libraries(bench_learner_vmbpo PRIVATE ember_learner)
  set_target_properties(bench_learner_vmbpo PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
endif()
add_executable(bench_plot_runs ${CMAKE_CURRENT_SOURCE_DIR}/bench_plot_runs.c)
target_link_libraries(bench_plot_runs PRIVATE ember_common)
set_target_properties(bench_plot_runs PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
