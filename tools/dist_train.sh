#!/usr/bin/env bash
# Multi-process training through torchrun.
#   bash tools/dist_train.sh CONFIG NPROC [train.py options...]
# NPROC processes per machine: one per GPU, or CPU processes (gloo) on a
# machine without CUDA. Several machines join with the usual variables:
#   NNODES (default 1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), PORT
# (default 29500 if free, else a free port, printed; other machines need
# the same PORT).
set -euo pipefail
CONFIG=${1:?usage: dist_train.sh CONFIG NPROC [options]}
NPROC=${2:?usage: dist_train.sh CONFIG NPROC [options]}
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
    "$HERE/train.py" "$CONFIG" --launcher pytorch "${@:3}"
