# CurveZMQ across real processes (ember-replay, ember-learner, ember-actor with keys).
if(TARGET ember-learner AND TARGET ember-actor AND TARGET ember-replay)
  ember_check_test(test_security_curve SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_security_curve.c
                   LIBS ember_replay ember_common TIMEOUT 300)
  add_dependencies(test_security_curve ember-learner ember-actor ember-replay)
endif()
