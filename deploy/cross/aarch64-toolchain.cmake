# Cross build of the edge agent for aarch64 (Raspberry Pi 4/5, Jetson) with Debian's
# crossbuild-essential-arm64, against arm64 Debian packages unpacked into FEDCAL_SYSROOT by
# deploy/cross/make-sysroot.sh (never installed: the arm64 XNNPACK packages would replace the amd64
# ones). Used by deploy/cross/build-aarch64.sh.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

if(NOT FEDCAL_SYSROOT)
  set(FEDCAL_SYSROOT "$ENV{FEDCAL_SYSROOT}")
endif()
if(NOT FEDCAL_SYSROOT)
  message(FATAL_ERROR "Set FEDCAL_SYSROOT to the folder make-sysroot.sh filled")
endif()
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES FEDCAL_SYSROOT)

set(CMAKE_FIND_ROOT_PATH "${FEDCAL_SYSROOT}" /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

set(_fedcal_libdir "${FEDCAL_SYSROOT}/usr/lib/aarch64-linux-gnu")
set(CMAKE_C_FLAGS_INIT "-isystem ${FEDCAL_SYSROOT}/usr/include/aarch64-linux-gnu -isystem ${FEDCAL_SYSROOT}/usr/include")
set(CMAKE_CXX_FLAGS_INIT "${CMAKE_C_FLAGS_INIT}")
# Some bookworm packages still put their libraries in /lib (libcom-err2, libkeyutils1).
set(CMAKE_EXE_LINKER_FLAGS_INIT
    "-L${_fedcal_libdir} -Wl,-rpath-link,${_fedcal_libdir} -Wl,-rpath-link,${FEDCAL_SYSROOT}/lib/aarch64-linux-gnu")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "${CMAKE_EXE_LINKER_FLAGS_INIT}")

set(ENV{PKG_CONFIG_SYSROOT_DIR} "${FEDCAL_SYSROOT}")
set(ENV{PKG_CONFIG_LIBDIR} "${_fedcal_libdir}/pkgconfig:${FEDCAL_SYSROOT}/usr/share/pkgconfig")

# Cap'n Proto code generation runs on the build machine.
set(CAPNP_EXECUTABLE /usr/bin/capnp)
set(CAPNPC_CXX_EXECUTABLE /usr/bin/capnpc-c++)
