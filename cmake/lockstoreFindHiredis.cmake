# Finds hiredis and defines the imported target lockstore_hiredis::hiredis
# (headers as <hiredis/hiredis.h>). Used by lockstore's build and by its
# installed package config.
if(NOT TARGET lockstore_hiredis::hiredis)
  find_path(LOCKSTORE_HIREDIS_INCLUDE_DIR hiredis/hiredis.h)
  find_library(LOCKSTORE_HIREDIS_LIBRARY hiredis)
  if(LOCKSTORE_HIREDIS_INCLUDE_DIR AND LOCKSTORE_HIREDIS_LIBRARY)
    add_library(lockstore_hiredis::hiredis UNKNOWN IMPORTED)
    set_target_properties(lockstore_hiredis::hiredis PROPERTIES
      IMPORTED_LOCATION "${LOCKSTORE_HIREDIS_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${LOCKSTORE_HIREDIS_INCLUDE_DIR}")
  endif()
endif()
