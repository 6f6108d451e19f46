#!/usr/bin/env bash
# What the firmware tests need (tests/firmware_c): the AVR and ARM cross toolchains, simavr to
# run the AVR image, and clang's libFuzzer. Installed with apt-get when missing and run as root;
# otherwise those tests skip locally and fail in CI (VMF_REQUIRE_SERVICES=1).
set -uo pipefail
missing=()
need() {  # need PACKAGE TEST-COMMAND...
    local pkg=$1
    shift
    "$@" >/dev/null 2>&1 || missing+=("$pkg")
}
need gcc-avr command -v avr-gcc
need avr-libc test -f /usr/lib/avr/include/avr/io.h
need gcc-arm-none-eabi command -v arm-none-eabi-gcc
need libnewlib-arm-none-eabi test -d /usr/lib/arm-none-eabi/newlib
need simavr command -v simavr
need libsimavr-dev test -f /usr/include/simavr/sim_avr.h
need libelf-dev test -f /usr/include/libelf.h
need clang command -v clang
need make command -v make
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "firmware-deps: installing ${missing[*]}" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") \
        >/dev/null 2>&1 || echo "firmware-deps: could not install ${missing[*]}; firmware tests will skip" >&2
else
    echo "firmware-deps: missing ${missing[*]} (sudo apt-get install ${missing[*]}); firmware tests will skip" >&2
fi
exit 0
