#!/usr/bin/env bash
# The real browser of the web-view tests (tests/web): Debian's Chromium, driven by Playwright from
# PyPI through its executable path (`playwright install` would download a browser build of its
# own, which is neither needed nor possible everywhere). Installed with apt-get when missing and
# run as root; otherwise the browser tests skip locally and fail in CI (VMF_REQUIRE_SERVICES).
set -uo pipefail
if command -v chromium >/dev/null || [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "browser-deps: installing chromium" >&2
    (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 \
        || echo "browser-deps: could not install chromium; the browser tests will skip" >&2
else
    echo "browser-deps: chromium not installed (sudo apt-get install chromium); the browser" \
        "tests will skip" >&2
fi
exit 0
