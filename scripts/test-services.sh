#!/usr/bin/env bash
# What the tests talk to for real: Mosquitto (the broker tests start their own on a free port)
# and PortAudio (the audio test plays on ALSA's null device). Installed with apt-get when
# missing and run as root; otherwise those tests skip locally and fail in CI.
set -uo pipefail
install() {  # install PACKAGE WHAT
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test-services: installing $1" >&2
        (apt-get update -qq && apt-get install -y -qq "$1") >/dev/null 2>&1 \
            || echo "test-services: could not install $1; $2 will skip" >&2
    else
        echo "test-services: $1 not installed (sudo apt-get install $1); $2 will skip" >&2
    fi
}
if ! command -v mosquitto >/dev/null && ! [ -x /usr/sbin/mosquitto ]; then
    install mosquitto "broker tests"
fi
if ! ldconfig -p 2>/dev/null | grep -q libportaudio; then
    install libportaudio2 "the audio stream test"
fi
exit 0
