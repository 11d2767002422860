#!/usr/bin/env bash
# LAPQ on NPROC processes of this machine (GPUs, or CPU processes with gloo):
#   bash tools/dist_quantize.sh CONFIG NPROC [quantize.py args ...]
# Several nodes: set NNODES, NODE_RANK, MASTER_ADDR and PORT on each node.
# PYTHON picks the interpreter (default: python3), e.g. a virtualenv's.
set -euo pipefail
CONFIG=$1
NPROC=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29511}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}

PYTHONPATH="$(dirname "$0")/..${PYTHONPATH:+:$PYTHONPATH}" \
"${PYTHON:-python3}" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" --master_port="$PORT" \
    "$(dirname "$0")/quantize.py" "$CONFIG" --launcher pytorch "${@:3}"
