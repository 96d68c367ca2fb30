# Check suites for the learner (learner/): SAC, VIREL, the registry, the learner loop; and the
# end-to-end tests (one process and several).
if(TARGET ember_learner)
  ember_check_test(test_sac SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_sac.c LIBS ember_learner ember_policy
                   TIMEOUT 120)
  ember_check_test(test_virel SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_virel.c LIBS ember_learner ember_policy
                   TIMEOUT 120)
  ember_check_test(test_mpo SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_mpo.c LIBS ember_learner ember_policy
                   TIMEOUT 120)
  ember_check_test(test_learner_loop SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_learner_loop.c
                   LIBS ember_learner ember_replay TIMEOUT 120)
  ember_check_test(test_learner_checkpoint SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_learner_checkpoint.c
                   LIBS ember_learner TIMEOUT 60)
endif()

# End to end, one process: `ember train` (tests/it_train_smoke.sh; quick, also under ASan) and the
# learning test (tests/it_learning.sh): SAC (and VIREL) on pendulum, seed 1, needs an evaluation (10 complete
# episodes of the deterministic policy, one row of evals.csv) whose mean is better than -400 by 15,000
# env steps. The run stops at the first such evaluation (`--stop-at-return -400`), so it lasts only as
# long as learning takes (timeout 480 s; the learning tests hold a RESOURCE_LOCK so that two never share the cores); too slow under ASan.
if(TARGET ember)
  add_test(NAME it_train_smoke COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/it_train_smoke.sh $<TARGET_FILE:ember>)
  set_tests_properties(it_train_smoke PROPERTIES TIMEOUT 180 ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
  # The learning test for MPO (its pendulum preset, app/settings.c): the same bar as SAC's below.
  add_test(NAME it_learning_mpo COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/it_learning.sh $<TARGET_FILE:ember> mpo)
  set_tests_properties(it_learning_mpo PROPERTIES TIMEOUT 480 RESOURCE_LOCK learning LABELS no-asan ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
  add_test(NAME it_learning_pendulum
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/it_learning.sh $<TARGET_FILE:ember> sac)
  set_tests_properties(it_learning_pendulum PROPERTIES TIMEOUT 480 RESOURCE_LOCK learning LABELS no-asan
                       ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
  # The same test for VIREL1 (its pendulum preset, app/settings.c).
  add_test(NAME it_learning_pendulum_virel
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/it_learning.sh $<TARGET_FILE:ember> virel)
  set_tests_properties(it_learning_pendulum_virel PROPERTIES TIMEOUT 480 RESOURCE_LOCK learning LABELS no-asan
                       ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
endif()

# End to end, separate processes over tcp loopback (ember-replay, ember-learner, ember-actor).
if(TARGET ember-learner AND TARGET ember-actor AND TARGET ember-replay)
  ember_check_test(test_learner_processes SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_learner_processes.c
                   LIBS ember_replay ember_common TIMEOUT 300)
  add_dependencies(test_learner_processes ember-learner ember-actor ember-replay)
endif()
