#!/usr/bin/env bash
# Multi-process testing through torchrun.
#   bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py options...]
# Variables as in dist_train.sh: NNODES, NODE_RANK, MASTER_ADDR, PORT.
set -euo pipefail
CONFIG=${1:?usage: dist_test.sh CONFIG CHECKPOINT NPROC [options]}
CHECKPOINT=${2:?usage: dist_test.sh CONFIG CHECKPOINT NPROC [options]}
NPROC=${3:?usage: dist_test.sh CONFIG CHECKPOINT NPROC [options]}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHON=${PYTHON:-python}

PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --master_port="$PORT" \
    --nproc_per_node="$NPROC" \
    "$HERE/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
