# Actors on two network hosts, replay + learner on a third, and a link cut and restored, with Linux
# network namespaces (tests/lib/netns.sh). Needs root (CAP_NET_ADMIN): skipped with the reason
# (exit 77) where namespaces are not allowed.
if(TARGET ember AND TARGET ember-learner AND TARGET ember-replay AND TARGET ember-actor)
  add_test(NAME it_multihost COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/it_multihost.sh)
  set_tests_properties(it_multihost PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77 LABELS "no-asan;netns"
    ENVIRONMENT "EMBER_SOURCE_DIR=${EMBER_SOURCE_DIR};EMBER_BINARY_DIR=${CMAKE_BINARY_DIR};OPENBLAS_NUM_THREADS=1")
endif()
