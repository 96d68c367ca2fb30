# Check suites for VMBPO. The tabular reference (learner/vmbpo_tabular.c) is compiled straight into
# its test until learner/ has a library target of its own.
ember_check_test(test_vmbpo_tabular
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_vmbpo_tabular.c ${EMBER_SOURCE_DIR}/learner/vmbpo_tabular.c
  LIBS ember_common
  TIMEOUT 120)
target_include_directories(test_vmbpo_tabular PRIVATE ${EMBER_SOURCE_DIR}/learner)

# The function-approximation VMBPO / VMBPO-MFE (learner/algo_vmbpo.c): every loss's value and
# gradient against a double-precision reference, the pure pieces against the tabular reference,
# refusals, rollback, save/load, export.
if(TARGET ember_learner)
  ember_check_test(test_vmbpo_losses
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_vmbpo_losses.c ${EMBER_SOURCE_DIR}/learner/vmbpo_tabular.c
    LIBS ember_learner
    TIMEOUT 120)
endif()
