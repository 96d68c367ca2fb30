# Check suites for common/ (errors, log, rng, config, net, metrics).
file(GLOB COMMON_TEST_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/test_common_*.c)
foreach(src ${COMMON_TEST_SOURCES})
  get_filename_component(name ${src} NAME_WE)
  ember_check_test(${name} SOURCES ${src} LIBS ember_common)
endforeach()
