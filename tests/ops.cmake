# Operations (learner/learner.c checkpoints, app/cmd_*.c): exact resume, `ember train
# --deterministic` bit-identity, TensorBoard events, and the operator commands plot/status/keygen.
if(TARGET ember)
  # stop + resume of --deterministic ends bit-identical to an uninterrupted run; refusals; CSV
  add_test(NAME it_resume COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/it_resume.sh $<TARGET_FILE:ember>)
  set_tests_properties(it_resume PROPERTIES TIMEOUT 360 ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
  # TensorBoard event files of a short `ember train`, decoded
  ember_check_test(test_resume_tb SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_resume_tb.c LIBS ember_common
                   TIMEOUT 180)
  add_dependencies(test_resume_tb ember)
  # physics faults in `ember train --deterministic`: left out, counted, logged per burst, resumed
  ember_check_test(test_train_faults SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_train_faults.c LIBS ember_common
                   TIMEOUT 180)
  add_dependencies(test_train_faults ember)
endif()
if(TARGET ember AND TARGET ember-learner AND TARGET ember-replay AND TARGET ember-actor)
  # status against three processes, SIGTERM + resume of ember-learner, plot, keygen
  add_test(NAME it_ops COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/it_ops.sh ${CMAKE_BINARY_DIR})
  set_tests_properties(it_ops PROPERTIES TIMEOUT 240 ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
endif()
if(TARGET ember)
  # `ember eval`: a checkpoint's policy over many episodes, and every refusal (it trains a 10k-step SAC run
  # first: under ASan on a busy machine 151 s, so a long timeout, and the learning tests' lock)
  add_test(NAME it_eval COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/it_eval.sh $<TARGET_FILE:ember>)
  set_tests_properties(it_eval PROPERTIES TIMEOUT 480 RESOURCE_LOCK learning ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
endif()
if(TARGET ember)
  # actor.ctrl_noise_std reaches --deterministic's envs and ember eval's; resume under noise; refusals
  add_test(NAME it_env_ctrl_noise COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/it_env_ctrl_noise.sh $<TARGET_FILE:ember>)
  set_tests_properties(it_env_ctrl_noise PROPERTIES TIMEOUT 180 ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
endif()
if(TARGET ember)
  # the task presets reach the settings a run really uses (config.yaml), and only their algorithm's
  add_test(NAME it_presets COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/it_presets.sh $<TARGET_FILE:ember>)
  set_tests_properties(it_presets PROPERTIES TIMEOUT 180 ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
endif()
if(TARGET ember)
  # docs/operations.md's settings table is `ember config --markdown`'s
  add_test(NAME it_docs_settings COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/it_docs_settings.sh $<TARGET_FILE:ember>
                                         ${CMAKE_SOURCE_DIR}/docs/operations.md)
  set_tests_properties(it_docs_settings PROPERTIES TIMEOUT 60)
endif()
