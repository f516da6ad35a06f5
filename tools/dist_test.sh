#!/usr/bin/env bash
# Multi-process testing through torchrun.
#   bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py options...]
# Variables as in dist_train.sh: NNODES, NODE_RANK, MASTER_ADDR, PORT.
set -euo pipefail
CONFIG=${1:?usage: dist_test.sh CONFIG CHECKPOINT NPROC [options]}
CHECKPOINT=${2:?usage: dist_test.sh CONFIG CHECKPOINT NPROC [options]}
NPROC=${3:?usage: dist_test.sh CONFIG CHECKPOINT NPROC [options]}
HERE="$(cd "$(dirname "$0")" && pwd)"
exec bash "$HERE/torchrun.sh" "$NPROC" "$HERE/test.py" "$CONFIG" \
    "$CHECKPOINT" "${@:4}"
