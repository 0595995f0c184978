#!/usr/bin/env bash
# Fetch, on a machine with a package registry, the wheels scripts/gpu_check.sh installs on
# a GPU machine that has none. That machine (Python 3.12, x86-64, torch 2.11,
# torchvision 0.26, numpy, PyYAML, tqdm, tensorboard, matplotlib, scikit-learn, timm and
# pytest already there) lacks only these; their needs are listed beside them.
#
#   scripts/fetch_gpu_wheels.sh [DIR]      # default .whl/ (git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.whl}
python=${PYTHON:-.venv/bin/python}
platforms=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64
    manylinux2014_x86_64 manylinux1_x86_64)
# kornia needs kornia_rs, numpy and torch; omegaconf needs PyYAML (the versions of .venv)
"$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]/#/--platform=}" -d "$dir" \
    kornia==0.9.0 kornia_rs==0.2.0 omegaconf==2.4.0
# bench/peer.py's peer: what its MoCo pieces import (not pytorch_lightning or hydra)
"$python" -m pip download --no-deps --only-binary=:all: -d "$dir" \
    lightly==1.6.0 lightning-utilities==0.15.3
ls -l "$dir"
