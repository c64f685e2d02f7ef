# What `cmake --install` installs (docs/client-library.md, "Installing"):
#   bin/                 the programs
#   lib/                 libbidmesh_client.a (client/CMakeLists.txt), its CMake package and
#                        pkgconfig/bidmesh.pc
#   include/bidmesh/     the client's headers (client/CMakeLists.txt)
#   <sysconfdir>/bidmesh/mesh.toml, <localstatedir>/lib/bidmesh/, the systemd unit
# The last three, and bidmesh.pc, name absolute paths, so they are written at install time for
# the prefix given then (cmake --install --prefix P, or DESTDIR): cmake/install-files.cmake.
include(CMakePackageConfigHelpers)

install(TARGETS bidmesh bidmesh-bench bidmesh-keygen bidmesh-router bidmesh-bid-node
                bidmesh-supervisor bidmesh-ctl bidmesh-wal
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)

set(BIDMESH_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/bidmesh)
install(EXPORT bidmeshTargets NAMESPACE bidmesh:: DESTINATION ${BIDMESH_CMAKE_DIR} COMPONENT dev)
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/bidmeshConfig.cmake.in
  ${PROJECT_BINARY_DIR}/cmake/bidmeshConfig.cmake INSTALL_DESTINATION ${BIDMESH_CMAKE_DIR})
# 0.x: a new minor version may change the API.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/cmake/bidmeshConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/cmake/bidmeshConfig.cmake
              ${PROJECT_BINARY_DIR}/cmake/bidmeshConfigVersion.cmake
        DESTINATION ${BIDMESH_CMAKE_DIR} COMPONENT dev)

# Empty: the systemd unit goes to <prefix>/lib/systemd/system (systemd reads /usr/lib/... and
# /usr/local/lib/...). An absolute path puts it there instead (e.g. /lib/systemd/system).
set(BIDMESH_SYSTEMD_UNIT_DIR "" CACHE STRING "Where the systemd unit is installed (empty: <prefix>/lib/systemd/system)")

set(BIDMESH_INSTALL_VARS "
  set(BIDMESH_SOURCE_DIR \"${PROJECT_SOURCE_DIR}\")
  set(BIDMESH_STAGE_DIR \"${PROJECT_BINARY_DIR}/install-files\")
  set(BIDMESH_VERSION \"${PROJECT_VERSION}\")
  set(BIDMESH_BINDIR_REL \"${CMAKE_INSTALL_BINDIR}\")
  set(BIDMESH_LIBDIR_REL \"${CMAKE_INSTALL_LIBDIR}\")
  set(BIDMESH_INCLUDEDIR_REL \"${CMAKE_INSTALL_INCLUDEDIR}\")
  set(BIDMESH_SYSCONFDIR_REL \"${CMAKE_INSTALL_SYSCONFDIR}\")
  set(BIDMESH_LOCALSTATEDIR_REL \"${CMAKE_INSTALL_LOCALSTATEDIR}\")
  set(BIDMESH_SYSTEMD_UNIT_DIR \"${BIDMESH_SYSTEMD_UNIT_DIR}\")")
install(CODE "${BIDMESH_INSTALL_VARS}
  set(BIDMESH_INSTALL_PART runtime)
  include(\"${CMAKE_CURRENT_LIST_DIR}/install-files.cmake\")" COMPONENT runtime)
install(CODE "${BIDMESH_INSTALL_VARS}
  set(BIDMESH_INSTALL_PART dev)
  include(\"${CMAKE_CURRENT_LIST_DIR}/install-files.cmake\")" COMPONENT dev)
