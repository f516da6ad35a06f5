#!/usr/bin/env bash
# Install stbsm-mm (tools/install.sh) and run the test suite.
#   bash tools/run_tests.sh [pytest options]
# The end-to-end tests read the real demo cohort from
# ../shared/data/spider-t2-demo, or from STBSM_DEMO_COHORT. Installing
# Chromium from Debian's packages needs root (apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
# The report test opens the HTML report in headless Chromium.
bash tools/install_test_browser.sh
VENV=${VENV:-.venv}
exec "$VENV/bin/python" -m pytest "$@"
