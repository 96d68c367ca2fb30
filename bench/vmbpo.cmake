# bench_plot_runs: PNG curves for bench/learning.sh (VMBPO's updates/s: bench_learner ... vmbpo).
add_executable(bench_plot_runs ${CMAKE_CURRENT_SOURCE_DIR}/bench_plot_runs.c)
target_link_libraries(bench_plot_runs PRIVATE ember_common)
set_target_properties(bench_plot_runs PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
