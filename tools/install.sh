#!/usr/bin/env bash
# Create the virtual environment .venv and install stbsm-mm into it with its
# pinned stack and the test tools. Re-running is quick: it reinstalls only
# when setup.py changed.
#   bash tools/install.sh
# Variables: PYTHON (interpreter that creates the venv, default python3.11
# or python3), VENV (folder, default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
if [ -z "${PYTHON:-}" ]; then
    PYTHON=$(command -v python3.11 || command -v python3)
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "Creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.stbsm-mm-installed"
wanted=$(sha256sum setup.py | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    echo "stbsm-mm is already installed in $VENV"
    exit 0
fi

"$VENV/bin/python" -m pip install --upgrade pip 'setuptools<81' wheel
"$VENV/bin/python" -m pip install -e '.[tests]'
"$VENV/bin/python" -c 'import stbsm_mm, mmpretrain; print("stbsm-mm", stbsm_mm.__version__, "with mmpretrain", mmpretrain.__version__)'
echo "$wanted" > "$stamp"
