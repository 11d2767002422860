#!/usr/bin/env bash
# Set up mmlapq on a fresh machine: Debian's Fashion-MNIST, torch, the pinned
# OpenMMLab stack, mmlapq itself (editable) with mmcls (default) or
# mmpretrain, and the unzipped data in data/.
#   bash tools/setup.sh [mmcls|mmpretrain]      (PYTHON=... picks the python)
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LIBRARY=${1:-mmcls}
case "$LIBRARY" in
  mmcls|mmpretrain) ;;
  *) echo "error: unknown library '$LIBRARY': bash tools/setup.sh [mmcls|mmpretrain]" >&2
     exit 1 ;;
esac

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || {
      apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist; }
  else
    echo "error: Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist'" >&2
    exit 1
  fi
fi

if [ "$LIBRARY" = mmpretrain ]; then
  # mmpretrain imports torchvision. A torch/torchvision pair that imports is
  # kept; else the pair this machine's registry has, a CUDA build that runs
  # on the CPU too (PyPI's torchvision does not import beside the CPU torch
  # 2.13.0 that the mmcls set-up installs).
  if ! $PY -c 'import torchvision' 2>/dev/null; then
    $PY -m pip install -q torch==2.14.1 torchvision==0.29.1
  fi
elif ! $PY -c 'import torch' 2>/dev/null; then
  # torch first: left alone when present (a CUDA build, say); else the CPU
  # build 2.13.0 (an unpinned torch would pull a multi-GB CUDA build).
  $PY -m pip install -q torch==2.13.0
fi
$PY -m pip install -q -r requirements.txt
$PY -m pip install -q -e ".[$LIBRARY]"
$PY tools/prepare_fmnist.py
