# Run by `cmake --install` (cmake/install.cmake sets the BIDMESH_* variables): writes the installed
# files that name absolute paths, for the prefix of this install, and installs them.
#   runtime: <sysconfdir>/bidmesh/mesh.toml (tools/local-mesh.toml with data_dir set to
#            <localstatedir>/lib/bidmesh), that data dir (mode 0750), and the systemd units
#            bidmesh-supervisor.service and bidmesh@.service (both from
#            supervisor/bidmesh-supervisor.service.in) naming the installed supervisor and config.
#   dev:     <libdir>/pkgconfig/bidmesh.pc (cmake/bidmesh.pc.in).
# Paths follow GNUInstallDirs, applied to the prefix given at install time: with prefix /usr the
# config is /etc/bidmesh/mesh.toml and the data /var/lib/bidmesh; with /usr/local (the default),
# /usr/local/etc/bidmesh and /usr/local/var/lib/bidmesh. A mesh.toml already in place and edited
# is kept; the new one is then written beside it as mesh.toml.default.

# GNUInstallDirs' rule: an absolute dir stays; sysconfdir and localstatedir under prefix /usr are
# /etc and /var, under /opt/NAME /etc/opt/NAME and /var/opt/NAME; anything else is under prefix.
function(bidmesh_full_dir out rel kind)
  set(prefix "${CMAKE_INSTALL_PREFIX}")
  string(REGEX REPLACE "/+$" "" prefix "${prefix}")
  if(IS_ABSOLUTE "${rel}")
    set(dir "${rel}")
  elseif(kind STREQUAL "system" AND prefix STREQUAL "/usr")
    set(dir "/${rel}")
  elseif(kind STREQUAL "system" AND prefix MATCHES "^/opt/(.+)$")
    set(dir "/${rel}/opt/${CMAKE_MATCH_1}")
  else()
    set(dir "${prefix}/${rel}")
  endif()
  set(${out} "${dir}" PARENT_SCOPE)
endfunction()

bidmesh_full_dir(BIDMESH_BINDIR "${BIDMESH_BINDIR_REL}" plain)
bidmesh_full_dir(BIDMESH_LIBDIR "${BIDMESH_LIBDIR_REL}" plain)
bidmesh_full_dir(BIDMESH_INCLUDEDIR "${BIDMESH_INCLUDEDIR_REL}" plain)
bidmesh_full_dir(BIDMESH_SYSCONFDIR "${BIDMESH_SYSCONFDIR_REL}" system)
bidmesh_full_dir(BIDMESH_LOCALSTATEDIR "${BIDMESH_LOCALSTATEDIR_REL}" system)
set(BIDMESH_CONFIG_DIR "${BIDMESH_SYSCONFDIR}/bidmesh")
set(BIDMESH_CONFIG_FILE "${BIDMESH_CONFIG_DIR}/mesh.toml")
set(BIDMESH_DATA_DIR "${BIDMESH_LOCALSTATEDIR}/lib/bidmesh")
if(BIDMESH_SYSTEMD_UNIT_DIR)
  set(unit_dir "${BIDMESH_SYSTEMD_UNIT_DIR}")
else()
  bidmesh_full_dir(unit_dir "lib/systemd/system" plain)
endif()
# One stage folder per destination, so that two installs of this tree into different places at
# the same time (two tests) never read each other's files.
string(MD5 stage_key "$ENV{DESTDIR}|${CMAKE_INSTALL_PREFIX}|${BIDMESH_INSTALL_PART}")
set(BIDMESH_STAGE_DIR "${BIDMESH_STAGE_DIR}/${stage_key}")
file(MAKE_DIRECTORY "${BIDMESH_STAGE_DIR}")

if(BIDMESH_INSTALL_PART STREQUAL "dev")
  # In the file, libdir and includedir are written as ${prefix}/... where they are under it.
  string(REGEX REPLACE "/+$" "" BIDMESH_PREFIX "${CMAKE_INSTALL_PREFIX}")
  foreach(dir LIBDIR INCLUDEDIR)
    set(BIDMESH_PC_${dir} "${BIDMESH_${dir}}")
    string(FIND "${BIDMESH_${dir}}" "${BIDMESH_PREFIX}/" at)
    if(at EQUAL 0 AND NOT BIDMESH_PREFIX STREQUAL "")
      string(REPLACE "${BIDMESH_PREFIX}/" "\${prefix}/" BIDMESH_PC_${dir} "${BIDMESH_${dir}}")
    endif()
  endforeach()
  configure_file("${BIDMESH_SOURCE_DIR}/cmake/bidmesh.pc.in" "${BIDMESH_STAGE_DIR}/bidmesh.pc" @ONLY)
  file(INSTALL DESTINATION "${BIDMESH_LIBDIR}/pkgconfig" TYPE FILE FILES "${BIDMESH_STAGE_DIR}/bidmesh.pc")
  return()
endif()

# The default config: the shipped local mesh (loopback endpoints, one router with the feed, two
# bid nodes) with its data under the data dir.
file(READ "${BIDMESH_SOURCE_DIR}/tools/local-mesh.toml" config)
string(REGEX REPLACE "^(#[^\n]*\n)+" "" config "${config}")
string(REGEX REPLACE "(\n)data_dir = \"[^\"]*\"" "\\1data_dir = \"${BIDMESH_DATA_DIR}\"" new_config "${config}")
if(new_config STREQUAL config)
  message(FATAL_ERROR "tools/local-mesh.toml: no data_dir = \"...\" line to set for the installed config")
endif()
file(WRITE "${BIDMESH_STAGE_DIR}/mesh.toml"
"# The default mesh of this host, installed with bidmesh: one router (with the feed) and two bid
# nodes on loopback, with the endpoints of the wire contract, data under ${BIDMESH_DATA_DIR}.
# Run by the bidmesh-supervisor unit; operate with bidmesh-ctl --config ${BIDMESH_CONFIG_FILE}.
# Every key is described in docs/configuration.md; a mesh that binds beyond loopback needs
# security = \"curve\" (docs/security.md).
${new_config}")
set(config_name mesh.toml)
if(EXISTS "$ENV{DESTDIR}${BIDMESH_CONFIG_FILE}")
  file(READ "$ENV{DESTDIR}${BIDMESH_CONFIG_FILE}" installed)
  file(READ "${BIDMESH_STAGE_DIR}/mesh.toml" staged)
  if(NOT installed STREQUAL staged)
    set(config_name mesh.toml.default)
    file(RENAME "${BIDMESH_STAGE_DIR}/mesh.toml" "${BIDMESH_STAGE_DIR}/${config_name}")
    message(STATUS "Keeping the edited $ENV{DESTDIR}${BIDMESH_CONFIG_FILE}; the default goes beside it")
  endif()
endif()
file(INSTALL DESTINATION "${BIDMESH_CONFIG_DIR}" TYPE FILE FILES "${BIDMESH_STAGE_DIR}/${config_name}")

# The data dir, empty; its owner (the user of the unit) is the package's or the operator's to set.
file(MAKE_DIRECTORY "${BIDMESH_STAGE_DIR}/data/bidmesh")
file(INSTALL DESTINATION "${BIDMESH_LOCALSTATEDIR}/lib" TYPE DIRECTORY FILES "${BIDMESH_STAGE_DIR}/data/bidmesh"
     DIR_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE)

# Two units from one source, so they share every setting: bidmesh-supervisor.service runs this
# machine's nodes by its hostname; the template bidmesh@.service runs `--host <instance>`. Both
# use the config's data_dir, so each conflicts with the other.
foreach(unit bidmesh-supervisor.service bidmesh@.service)
  if(unit STREQUAL "bidmesh@.service")
    set(BIDMESH_UNIT_DESCRIPTION "bidmesh supervisor of mesh host %i (live auction mesh nodes)")
    set(BIDMESH_UNIT_HOST_ARG " --host %i")
    set(BIDMESH_UNIT_CONFLICTS "Conflicts=bidmesh-supervisor.service")
    set(BIDMESH_UNIT_EXAMPLE "bidmesh@HOST (HOST: a `host` of the config)")
  else()
    set(BIDMESH_UNIT_DESCRIPTION "bidmesh supervisor (live auction mesh nodes of this host)")
    set(BIDMESH_UNIT_HOST_ARG "")
    set(BIDMESH_UNIT_CONFLICTS "")
    set(BIDMESH_UNIT_EXAMPLE "bidmesh-supervisor")
  endif()
  configure_file("${BIDMESH_SOURCE_DIR}/supervisor/bidmesh-supervisor.service.in"
                 "${BIDMESH_STAGE_DIR}/${unit}" @ONLY)
  file(INSTALL DESTINATION "${unit_dir}" TYPE FILE FILES "${BIDMESH_STAGE_DIR}/${unit}")
endforeach()
