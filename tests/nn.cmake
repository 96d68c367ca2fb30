# Check suites for common/nn: every gradient against central finite differences in double.
file(GLOB NN_TEST_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/test_nn_*.c)
foreach(src ${NN_TEST_SOURCES})
  get_filename_component(name ${src} NAME_WE)
  ember_check_test(${name} SOURCES ${src} LIBS ember_nn TIMEOUT 120)
endforeach()
