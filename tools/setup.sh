#!/usr/bin/env bash
# Set up mmlapq on a fresh machine: Debian's Fashion-MNIST, torch, the pinned
# OpenMMLab stack, mmlapq itself (editable), and the unzipped data in data/.
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || {
      apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist; }
  else
    echo "error: Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist'" >&2
    exit 1
  fi
fi

# torch first: left alone when present (a CUDA build, say); else the CPU
# build 2.13.0 (an unpinned torch would pull a multi-GB CUDA build).
if ! $PY -c 'import torch' 2>/dev/null; then
  $PY -m pip install -q torch==2.13.0
fi
$PY -m pip install -q -r requirements.txt
$PY -m pip install -q --no-deps -e .
$PY tools/prepare_fmnist.py
