#!/usr/bin/env bash
# The broker tests start their own Mosquitto on a free port; make sure the binary is there.
# Without it (and without root to install it) those tests skip locally and fail in CI.
set -uo pipefail
if ! command -v mosquitto >/dev/null && ! [ -x /usr/sbin/mosquitto ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test-services: installing mosquitto" >&2
        (apt-get update -qq && apt-get install -y -qq mosquitto) >/dev/null 2>&1 \
            || echo "test-services: could not install mosquitto; broker tests will skip" >&2
    else
        echo "test-services: mosquitto not installed (sudo apt-get install mosquitto);" \
             "broker tests will skip" >&2
    fi
fi
exit 0
