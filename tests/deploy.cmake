# The docker-compose cluster on the local Docker engine (skipped, with the reason, where there is none).
add_test(NAME it_compose COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/it_compose.sh)
set_tests_properties(it_compose PROPERTIES TIMEOUT 1500 SKIP_RETURN_CODE 77 LABELS "no-asan;docker"
  ENVIRONMENT "EMBER_SOURCE_DIR=${EMBER_SOURCE_DIR}")
