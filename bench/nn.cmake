# bench_nn: OpenBLAS sgemm at the MLP's sizes against the MLP's forward + backward (make bench-nn).
add_executable(bench_nn ${CMAKE_CURRENT_SOURCE_DIR}/bench_nn.c)
target_link_libraries(bench_nn PRIVATE ember_nn)
set_target_properties(bench_nn PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
