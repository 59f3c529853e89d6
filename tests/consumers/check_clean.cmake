# After lockstore was added as a subproject: nothing of its development
# build may exist, and the consumer's flags must be as they were.
foreach(target IN ITEMS lockstore_tests lockstore_server_tests lockstore_pch lock_bench store_bench server_bench
                        example_01_memory_lock lockstore_tool lockstore_demo)
  if(TARGET ${target})
    message(FATAL_ERROR "lockstore added its development target '${target}' to a consumer's build")
  endif()
endforeach()
get_directory_property(options COMPILE_OPTIONS)
get_directory_property(link_options LINK_OPTIONS)
if(options OR link_options OR NOT "${CMAKE_CXX_FLAGS}" STREQUAL "${flags_before}")
  message(FATAL_ERROR "lockstore changed the consumer's global flags: '${options}' '${link_options}' '${CMAKE_CXX_FLAGS}'")
endif()
if(BUILD_TESTING)
  message(FATAL_ERROR "lockstore turned on BUILD_TESTING (include(CTest)) in a consumer")
endif()
