# Install rules and the Debian package (CPack DEB), included from the top CMakeLists.txt.
#
# Destinations are relative to the install prefix, which for the package is "/": the tree under
# the prefix is the file system as installed. So `cmake --install build --prefix /tmp/root`
# lays out /tmp/root/usr/sbin/sluice, /tmp/root/etc/sluice/sluice.toml and so on, and
# packaging/deb.sh builds the .deb from the same rules.

set(SLUICE_PKG_DIR ${CMAKE_SOURCE_DIR}/packaging)
set(SLUICE_GEN_DIR ${CMAKE_BINARY_DIR}/packaging)
# Debian's python3 first (the script needs only the standard library).
find_program(SLUICE_PKG_PYTHON NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(NOT SLUICE_PKG_PYTHON)
  find_program(SLUICE_PKG_PYTHON NAMES python3 REQUIRED)
endif()

# Man pages sluice(8) and sluice.toml(5), generated from the docs (docs/sluice.8.md and
# docs/configuration.md) so that the two never disagree; gzip -n for reproducible packages.
set(SLUICE_MAN_SOURCES ${CMAKE_SOURCE_DIR}/docs/sluice.8.md ${CMAKE_SOURCE_DIR}/docs/configuration.md
  ${SLUICE_PKG_DIR}/manpages.py)
add_custom_command(
  OUTPUT ${SLUICE_GEN_DIR}/sluice.8 ${SLUICE_GEN_DIR}/sluice.toml.5
         ${SLUICE_GEN_DIR}/sluice.8.gz ${SLUICE_GEN_DIR}/sluice.toml.5.gz
  COMMAND ${SLUICE_PKG_PYTHON} ${SLUICE_PKG_DIR}/manpages.py --version ${PROJECT_VERSION}
          --out ${SLUICE_GEN_DIR} ${CMAKE_SOURCE_DIR}/docs
  COMMAND gzip -9nkf ${SLUICE_GEN_DIR}/sluice.8 ${SLUICE_GEN_DIR}/sluice.toml.5
  DEPENDS ${SLUICE_MAN_SOURCES}
  COMMENT "Generating man pages sluice(8) and sluice.toml(5)")
# The Debian changelog, compressed as policy wants it.
add_custom_command(
  OUTPUT ${SLUICE_GEN_DIR}/changelog.gz
  COMMAND gzip -9nc ${SLUICE_PKG_DIR}/changelog > ${SLUICE_GEN_DIR}/changelog.gz
  DEPENDS ${SLUICE_PKG_DIR}/changelog)
add_custom_target(sluice_manpages ALL
  DEPENDS ${SLUICE_GEN_DIR}/sluice.8.gz ${SLUICE_GEN_DIR}/sluice.toml.5.gz
          ${SLUICE_GEN_DIR}/changelog.gz)

install(TARGETS sluice RUNTIME DESTINATION usr/sbin)
install(FILES ${SLUICE_PKG_DIR}/sluice.toml DESTINATION etc/sluice)
install(FILES ${SLUICE_PKG_DIR}/sluice.logrotate DESTINATION etc/logrotate.d RENAME sluice)
install(FILES ${SLUICE_PKG_DIR}/sluice.service DESTINATION lib/systemd/system)
install(FILES ${SLUICE_GEN_DIR}/sluice.8.gz DESTINATION usr/share/man/man8)
install(FILES ${SLUICE_GEN_DIR}/sluice.toml.5.gz DESTINATION usr/share/man/man5)
install(FILES ${SLUICE_PKG_DIR}/sluice.bash-completion
  DESTINATION usr/share/bash-completion/completions RENAME sluice)
install(FILES ${SLUICE_PKG_DIR}/copyright ${SLUICE_GEN_DIR}/changelog.gz
  DESTINATION usr/share/doc/sluice)
install(DIRECTORY ${CMAKE_SOURCE_DIR}/docs/ DESTINATION usr/share/doc/sluice
  FILES_MATCHING PATTERN "*.md")
install(FILES ${CMAKE_SOURCE_DIR}/README.md DESTINATION usr/share/doc/sluice)
# The examples: every key (full.toml, with the files it names), the smallest setup (demo.toml),
# includes (conf.d/). Not the certificates and secrets a local run generates beside them.
install(DIRECTORY ${CMAKE_SOURCE_DIR}/conf/examples/ DESTINATION usr/share/doc/sluice/examples
  FILES_MATCHING PATTERN "*.toml" PATTERN "*.txt" PATTERN "*.sh"
  PATTERN "certs" EXCLUDE PATTERN "secrets" EXCLUDE)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME sluice)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /)
set(CPACK_PACKAGE_CONTACT "sluice maintainers <maintainers@users.noreply.h-seed-be20973b.example>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "reverse proxy and WebSocket-aware edge gateway")
# The extended description (CPack puts the summary above it as the synopsis).
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "sluice terminates TLS, proxies HTTP/1.1 and WebSockets to pools of
backends, and keeps reading a WebSocket after the upgrade: every frame is
checked against RFC 6455 and every message passes a filter chain (origin
checks, limits, JWT, rate limits, a WAF) before it reaches the other side.
Reloads, binary upgrades and drains lose no connection.")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# dpkg-shlibdeps turns the binary's shared libraries into Depends (libuv1, libssl3,
# libmodsecurity3, libbrotli1, libre2-9, zlib1g, ...); adduser for the postinst.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser, init-system-helpers (>= 1.52)")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "logrotate")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "modsecurity-crs")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${SLUICE_PKG_DIR}/debian/conffiles ${SLUICE_PKG_DIR}/debian/postinst
  ${SLUICE_PKG_DIR}/debian/prerm ${SLUICE_PKG_DIR}/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_STRIP_FILES ON)
include(CPack)
