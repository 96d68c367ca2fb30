# Replay server tests: unit suites (sum-tree, rate limiter, table, snapshots, the docs against the
# code), the server under bad input (embedded, real sockets), and the multi-process integration test
# against ember-replay.
foreach(name sumtree rate_limiter table snapshot docs)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/test_replay_${name}.c)
    ember_check_test(test_replay_${name} SOURCES test_replay_${name}.c LIBS ember_replay TIMEOUT 60)
  endif()
endforeach()
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/test_replay_server.c)
  ember_check_test(test_replay_server SOURCES test_replay_server.c LIBS ember_replay TIMEOUT 90)
endif()
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/test_replay_integration.c AND TARGET ember-replay)
  ember_check_test(test_replay_integration SOURCES test_replay_integration.c LIBS ember_replay TIMEOUT 120)
  add_dependencies(test_replay_integration ember-replay)
endif()
