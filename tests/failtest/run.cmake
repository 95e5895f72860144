# cmake -DBUILD_DIR=... -DTARGET=... -DEXPECT=<regex> -P run.cmake
# Builds TARGET, which must fail, and requires the compiler's output to match EXPECT.
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BUILD_DIR} --target ${TARGET}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "failtest: ${TARGET} compiled, but it must not")
endif()
if(NOT "${out}${err}" MATCHES "${EXPECT}")
  message(FATAL_ERROR "failtest: ${TARGET} failed to compile, but not with '${EXPECT}':\n${out}${err}")
endif()
message(STATUS "failtest: ${TARGET} failed to compile as it must")
