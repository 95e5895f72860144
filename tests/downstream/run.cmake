# cmake -DMODE=... -DSOURCE_DIR=... -DBUILD_DIR=... -DWORK_DIR=... [-DGENERATOR=...] [-DCUDA_COMPILER=...] [-DPREFIX_PATH=a|b] -P run.cmake
# Installs mla from BUILD_DIR (package mode), configures tests/downstream in WORK_DIR, builds
# it and runs the program. Any failing step fails the test.
function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGV}")
    message(FATAL_ERROR "downstream (${MODE}): failed: ${cmd}")
  endif()
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
set(extra "")
if(MODE STREQUAL "package" OR MODE STREQUAL "cuda")
  run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/prefix)
  list(APPEND extra -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
endif()
set(env "")
if(MODE STREQUAL "cuda")
  list(APPEND extra -DCMAKE_CUDA_COMPILER=${CUDA_COMPILER})
  if(PREFIX_PATH)  # the parent build's prefixes, '|'-separated: where mla's dependencies are
    string(REPLACE "|" ":" prefixes "${PREFIX_PATH}")
    set(env ${CMAKE_COMMAND} -E env "CMAKE_PREFIX_PATH=${prefixes}")
  endif()
endif()
run(${env} ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/downstream -B ${WORK_DIR}/build -G ${GENERATOR} --no-warn-unused-cli
    -DMLA_DOWNSTREAM_MODE=${MODE} -DMLA_SOURCE_DIR=${SOURCE_DIR} -DCMAKE_BUILD_TYPE=Release
    ${extra})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
# The CUDA program runs as a test of its own (it is skipped where there is no GPU).
if(NOT MODE STREQUAL "cuda")
  run(${WORK_DIR}/build/downstream)
endif()
