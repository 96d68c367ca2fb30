# Check suites for common/env (the MuJoCo tasks). Built only when the env library is.
if(TARGET ember_env)
  ember_check_test(test_env_tasks SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_env_tasks.c LIBS ember_env TIMEOUT 120)
  ember_check_test(test_env_ctrl_noise SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_env_ctrl_noise.c LIBS ember_env TIMEOUT 120)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/test_env_vec.c)
    ember_check_test(test_env_vec SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_env_vec.c LIBS ember_env TIMEOUT 240)
  endif()
endif()
