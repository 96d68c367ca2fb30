# Check suites for the acting policy (common/policy) and the actor (actor/).
file(GLOB POLICY_TEST_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/test_policy_*.c)
foreach(src ${POLICY_TEST_SOURCES})
  get_filename_component(name ${src} NAME_WE)
  ember_check_test(${name} SOURCES ${src} LIBS ember_policy TIMEOUT 60)
endforeach()

if(TARGET ember_actor)
  file(GLOB ACTOR_TEST_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/test_actor_*.c)
  foreach(src ${ACTOR_TEST_SOURCES})
    get_filename_component(name ${src} NAME_WE)
    ember_check_test(${name} SOURCES ${src} LIBS ember_actor TIMEOUT 120)
  endforeach()
  if(TARGET test_actor_process)
    add_dependencies(test_actor_process ember-actor) # it runs the binary
  endif()
endif()
