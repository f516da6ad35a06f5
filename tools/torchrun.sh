#!/usr/bin/env bash
# Run a tools/ script under torchrun; shared by dist_train.sh and
# dist_test.sh.
#   bash tools/torchrun.sh NPROC SCRIPT [script arguments...]
# Variables: NNODES (default 1), NODE_RANK (0), MASTER_ADDR (127.0.0.1),
# PORT (default 29500 if free, else a free port, printed; with several
# machines 29500, which every machine must share), PYTHON (python).
set -euo pipefail
NPROC=${1:?usage: torchrun.sh NPROC SCRIPT [arguments]}
SCRIPT=${2:?usage: torchrun.sh NPROC SCRIPT [arguments]}
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
    "$SCRIPT" "${@:3}" --launcher pytorch
