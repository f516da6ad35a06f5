#!/usr/bin/env bash
# Multi-process testing through torchrun.
#   bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py options...]
# Variables as in dist_train.sh: NNODES, NODE_RANK, MASTER_ADDR, PORT.
# Without PORT, the first machine uses 29500 if free, else a free port.
set -euo pipefail
CONFIG=${1:?usage: dist_test.sh CONFIG CHECKPOINT NPROC [options]}
CHECKPOINT=${2:?usage: dist_test.sh CONFIG CHECKPOINT NPROC [options]}
NPROC=${3:?usage: dist_test.sh CONFIG CHECKPOINT NPROC [options]}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHON=${PYTHON:-python}
if [ -z "${PORT:-}" ] && [ "$NNODES" != 1 ]; then
    # Every machine must agree on the port, so none is picked at random.
    PORT=29500
fi
if [ "$NODE_RANK" = 0 ]; then
    # The first machine hosts the rendezvous: check PORT before any worker
    # starts, or pick a free port when PORT is unset.
    PORT=$("$PYTHON" "$HERE/check_port.py" ${PORT:+--port "$PORT"})
    echo "Rendezvous at $MASTER_ADDR:$PORT" >&2
else
    PORT=${PORT:-29500}
fi

PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --master_port="$PORT" \
    --nproc_per_node="$NPROC" \
    "$HERE/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
