#!/usr/bin/env bash
# Install the headless browser that tests/test_report.py opens report.html in.
#
# Installs Debian's `chromium` package with apt-get when /usr/bin/chromium is
# missing; does nothing when it is present. Needs root (as in CI) or sudo.
#
#   bash tools/install_test_browser.sh
set -euo pipefail

BROWSER=/usr/bin/chromium

if [ -x "$BROWSER" ]; then
    echo "chromium is already installed at $BROWSER."
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: apt-get not found. Install Chromium with this system's" \
        "package manager so that $BROWSER exists." >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "error: installing chromium needs root. Run this script as" \
            "root, or install sudo." >&2
        exit 1
    fi
    SUDO=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-liberation \
    >/dev/null

if [ ! -x "$BROWSER" ]; then
    echo "error: apt-get installed chromium but $BROWSER is missing." >&2
    exit 1
fi
echo "chromium installed: $("$BROWSER" --version)"
