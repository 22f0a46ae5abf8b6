# Locates the onnxruntime C API headers and sets ORT_INCLUDE_DIR.
# 1. ORT_INCLUDE_DIR given as cache variable (-D) or environment variable: used as is.
# 2. Otherwise fetch_ort_headers.sh downloads Debian's libonnxruntime-dev package with a private apt
#    configuration (no system change) and unpacks its headers into the build directory, once.
#    onnxruntime wheels ship no headers, hence the detour.

set(ORT_INCLUDE_DIR "" CACHE PATH "Directory holding onnxruntime_c_api.h (fetched when empty)")
if(NOT ORT_INCLUDE_DIR AND DEFINED ENV{ORT_INCLUDE_DIR})
  set(ORT_INCLUDE_DIR "$ENV{ORT_INCLUDE_DIR}" CACHE PATH "Directory holding onnxruntime_c_api.h" FORCE)
endif()

if(ORT_INCLUDE_DIR)
  if(NOT EXISTS "${ORT_INCLUDE_DIR}/onnxruntime_c_api.h")
    message(FATAL_ERROR "ORT_INCLUDE_DIR=${ORT_INCLUDE_DIR} does not contain onnxruntime_c_api.h; "
                        "point it at the onnxruntime include directory (the one holding onnxruntime_c_api.h).")
  endif()
  message(STATUS "onnxruntime headers: ${ORT_INCLUDE_DIR}")
  return()
endif()

set(_inq_ort_dest "${CMAKE_BINARY_DIR}/_deps/ort-headers")
if(NOT EXISTS "${_inq_ort_dest}/onnxruntime_c_api.h")
  find_program(_inq_bash bash)
  if(NOT _inq_bash)
    message(FATAL_ERROR "Cannot fetch onnxruntime headers (bash not found). Set ORT_INCLUDE_DIR to a directory "
                        "holding onnxruntime_c_api.h (onnxruntime >= 1.16 headers).")
  endif()
  message(STATUS "Fetching onnxruntime headers (Debian libonnxruntime-dev) into ${_inq_ort_dest}")
  execute_process(
    COMMAND "${_inq_bash}" "${CMAKE_CURRENT_LIST_DIR}/fetch_ort_headers.sh" "${_inq_ort_dest}"
    TIMEOUT 600  # network fetch: fail instead of hanging the configure step
    RESULT_VARIABLE _inq_rc
    OUTPUT_VARIABLE _inq_out
    ERROR_VARIABLE _inq_err)
  if(NOT _inq_rc EQUAL 0 OR NOT EXISTS "${_inq_ort_dest}/onnxruntime_c_api.h")
    message(FATAL_ERROR "Fetching the onnxruntime headers failed (${_inq_rc}):\n${_inq_err}\n"
                        "Set ORT_INCLUDE_DIR (CMake cache or environment variable) to a directory holding "
                        "onnxruntime_c_api.h, e.g. from an onnxruntime release archive's include/ folder.")
  endif()
endif()
set(ORT_INCLUDE_DIR "${_inq_ort_dest}")
message(STATUS "onnxruntime headers: ${ORT_INCLUDE_DIR} (fetched)")
