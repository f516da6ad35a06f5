#!/usr/bin/env bash
# Multi-process training through torchrun.
#   bash tools/dist_train.sh CONFIG NPROC [train.py options...]
# NPROC processes per machine: one per GPU, or CPU processes (gloo) on a
# machine without CUDA. Several machines join with NNODES, NODE_RANK,
# MASTER_ADDR and PORT (see tools/torchrun.sh).
set -euo pipefail
CONFIG=${1:?usage: dist_train.sh CONFIG NPROC [options]}
NPROC=${2:?usage: dist_train.sh CONFIG NPROC [options]}
HERE="$(cd "$(dirname "$0")" && pwd)"
exec bash "$HERE/torchrun.sh" "$NPROC" "$HERE/train.py" "$CONFIG" "${@:3}"
