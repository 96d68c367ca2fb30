# Check suites for the learner (learner/): SAC, the registry, the learner loop; and the
# end-to-end tests (one process and several).
if(TARGET ember_learner)
  ember_check_test(test_sac SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_sac.c LIBS ember_learner ember_policy
                   TIMEOUT 120)
endif()
