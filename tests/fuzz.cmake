# Fuzz targets (tests/fuzz/; docs/reliability.md, "Fuzzing"). Each tests/fuzz/fuzz_<target>.c defines
# LLVMFuzzerTestOneInput and is built
#   - always, with the project's compiler and flags, as fuzz_replay_<target> (the target plus
#     tests/fuzz/replay_main.c): a ctest that runs the committed seed corpus and every regression
#     input through it, in seconds (and under ASan + UBSan in `make test`'s sanitized build);
#   - with EMBER_FUZZ=ON and clang only, as fuzz_<target> linked with libFuzzer, to search for new
#     crashes (`make fuzz`, in its own build directory: tests/fuzz/run.sh).
# fuzz_make_corpus regenerates the seed corpus (`make fuzz-corpus`); the test fuzz_make_corpus keeps it
# working by writing a fresh corpus into the build directory and replaying it.
set(FUZZ_SRC ${CMAKE_CURRENT_SOURCE_DIR}/fuzz)
set(EMBER_FUZZ_TARGETS
    transition_batch sample_request priority_update hello envelope params evaluation_report
    policy_import config snapshot checkpoint)
set(FUZZ_LIBS_transition_batch ember_replay)
set(FUZZ_LIBS_sample_request ember_replay)
set(FUZZ_LIBS_priority_update ember_replay)
set(FUZZ_LIBS_hello ember_replay)
set(FUZZ_LIBS_envelope ember_replay)
set(FUZZ_LIBS_params ember_policy)
set(FUZZ_LIBS_evaluation_report ember_learner)
set(FUZZ_LIBS_policy_import ember_policy)
set(FUZZ_LIBS_config ember_app)
set(FUZZ_LIBS_snapshot ember_replay)
set(FUZZ_LIBS_checkpoint ember_learner ember_policy PkgConfig::ZSTD)

set(EMBER_FUZZ_LIBFUZZER OFF)
if(EMBER_FUZZ)
  if(CMAKE_C_COMPILER_ID STREQUAL "Clang")
    set(EMBER_FUZZ_LIBFUZZER ON)
  else()
    message(WARNING "EMBER_FUZZ=ON needs clang (libFuzzer is part of it); ${CMAKE_C_COMPILER_ID} builds only the "
                    "fuzz_replay_* programs. Configure with CC=clang, as tests/fuzz/run.sh does.")
  endif()
endif()

foreach(t ${EMBER_FUZZ_TARGETS})
  add_executable(fuzz_replay_${t} ${FUZZ_SRC}/fuzz_${t}.c ${FUZZ_SRC}/replay_main.c)
  target_include_directories(fuzz_replay_${t} PRIVATE ${FUZZ_SRC} ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_libraries(fuzz_replay_${t} PRIVATE ${FUZZ_LIBS_${t}})
  add_test(NAME fuzz_replay_${t}
           COMMAND fuzz_replay_${t} ${FUZZ_SRC}/corpus/${t} ${FUZZ_SRC}/regressions/${t})
  set_tests_properties(fuzz_replay_${t} PROPERTIES TIMEOUT 120 LABELS fuzz
                       ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
  if(EMBER_FUZZ_LIBFUZZER)
    add_executable(fuzz_${t} ${FUZZ_SRC}/fuzz_${t}.c)
    target_include_directories(fuzz_${t} PRIVATE ${FUZZ_SRC} ${CMAKE_CURRENT_SOURCE_DIR})
    target_link_libraries(fuzz_${t} PRIVATE ${FUZZ_LIBS_${t}})
    target_compile_options(fuzz_${t} PRIVATE -fsanitize=fuzzer)
    target_link_options(fuzz_${t} PRIVATE -fsanitize=fuzzer)
  endif()
endforeach()

add_executable(fuzz_make_corpus ${FUZZ_SRC}/make_corpus.c)
target_include_directories(fuzz_make_corpus PRIVATE ${FUZZ_SRC} ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(fuzz_make_corpus PRIVATE ember_app ember_policy PkgConfig::ZSTD)
set(FUZZ_FRESH ${CMAKE_CURRENT_BINARY_DIR}/fuzz-corpus-fresh)
list(JOIN EMBER_FUZZ_TARGETS " " FUZZ_TARGET_WORDS)
add_test(NAME fuzz_make_corpus
         COMMAND sh -c "rm -rf '${FUZZ_FRESH}' && '$<TARGET_FILE:fuzz_make_corpus>' '${FUZZ_FRESH}' >/dev/null && for t in ${FUZZ_TARGET_WORDS}; do ls \"${FUZZ_FRESH}/$t\" | grep -q . || { echo \"no seeds for $t\"; exit 1; }; done")
set_tests_properties(fuzz_make_corpus PROPERTIES TIMEOUT 120 LABELS fuzz ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
