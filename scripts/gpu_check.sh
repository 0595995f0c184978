#!/usr/bin/env bash
# The one-shot GPU check (issue 17): run by hand on a machine with one GPU, from anywhere
# in the repository, in under ten minutes. Every step appends its output to one log, is
# time-boxed (timeout, and never past the budget), and may fail without stopping the
# others; the log ends with each step's status and seconds. Nothing here changes the
# library.
#
#   scripts/gpu_check.sh                # on the GPU machine
#   scripts/gpu_check.sh --cpu-dry-run  # anywhere: the same steps on CPU at small sizes
#
# Environment: GPU_CHECK_LOG (the log; default gpu_check.log), GPU_CHECK_DIR (runs, data,
# installed wheels; default a new /tmp directory), GPU_CHECK_BUDGET_S (default 570; 1800
# for the dry run), PYTHON (default .venv/bin/python if there, else python3).
#
# Packages: what `import moco` needs and the machine lacks (on the lent H200: kornia,
# kornia_rs, omegaconf) is installed offline from the wheels in .whl/, which
# scripts/fetch_gpu_wheels.sh downloads beforehand. The source tree is used in place
# (PYTHONPATH=src): no `pip install -e .`, whose build would need a registry.
#
# Steps, in order, and what each decides (issue 17's items):
#   versions          torch, CUDA, cuDNN, NCCL, the GPU; native bf16 and amp=auto (item 5)
#   sync-audit        host syncs of one training epoch, by place, amp auto and fp16 (7)
#   default-epoch     the default preset, one epoch with the kNN monitor, on CUDA;
#   knn, lincls       then `moco knn` and `moco lincls --protocol small` on its run
#   epochs            one epoch each: fp16, fp32, channels_last, symmetric, end_to_end,
#                     memory_bank, moco_v3, simclr, vit, compile (scripts/gpu_probe.py)
#   tests             the tests with CUDA paths (tests/test_device.py's GPU tests run)
#   resume            checkpoints resumed with other visible GPUs (CUDA_VISIBLE_DEVICES:
#                     1 -> none -> 1; 2 -> the other one where 2 exist) (item 3)
#   torchrun-1gpu     2 processes on 1 GPU: each must stop with item 1's message
#   probes            TF32, cudnn.benchmark, LARS, fp16 scaler syncs on ResNet-50 (7)
#   peer              bench/peer.py: our MoCo step against lightly's, CIFAR-demo shape,
#                     FP32 and bf16 (issue 18, item 6; lightly from .whl/)
#   step_ratio        bench/step_ratio.py on ResNet-50
#   speed_options     bench/speed_options.py on ResNet-50 (channels_last, bf16, fp16,
#                     fused SGD; 30-step loss check)
#   compile-ddp       torch.compile before / after DDP on a 1-process group (7)
#   speed-compile     bench/speed_options.py's torch.compile on ResNet-50 (long: last)
set -uo pipefail
cd "$(dirname "$0")/.."
SELF="$PWD/scripts/gpu_check.sh"

if [[ -x .venv/bin/python ]]; then PY=${PYTHON:-.venv/bin/python}; else PY=${PYTHON:-python3}; fi
export PY PYTHONUNBUFFERED=1

# -------------------------------------------------------- steps run as sub-commands
# (`timeout` runs commands, not shell functions: the multi-command steps call this
# script again with their name; they read the variables exported below)

if [[ "${1:-}" == _resume ]]; then
    set -ex
    read -ra small <<<"$SMALL"
    base=(run.progress=false "run.out_dir=$WORK/runs" "data.source=$DATA" eval.knn_every=0)
    base+=("${small[@]}")
    gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())")
    if [[ $DEV == cuda && $gpus -ge 2 ]]; then  # 2 visible, then the other one alone
        CUDA_VISIBLE_DEVICES=0,1 "$PY" -m moco pretrain "${base[@]}" run.device=cuda \
            optim.epochs=1 run.name=resume2
        CUDA_VISIBLE_DEVICES=1 "$PY" -m moco pretrain --resume "$WORK/runs/resume2" optim.epochs=2
    fi
    "$PY" -m moco pretrain "${base[@]}" "run.device=$DEV" optim.epochs=1 run.name=resume
    # no GPU visible: the checkpoint's CUDA RNG state has no GPU to go to
    CUDA_VISIBLE_DEVICES= "$PY" -m moco pretrain --resume "$WORK/runs/resume" optim.epochs=2 \
        run.device=cpu
    # a GPU again, from a checkpoint written on CPU (no CUDA RNG state in it)
    "$PY" -m moco pretrain --resume "$WORK/runs/resume" optim.epochs=3 "run.device=$DEV"
    "$PY" -c "from moco.engine import checkpoint as c; ck = c.load('$WORK/runs/resume');
print('resumed twice: epoch', ck['epoch'], 'step', ck['step'], 'on', ck['derived']['device'])"
    exit 0
fi

if [[ "${1:-}" == _torchrun ]]; then
    read -ra small <<<"$SMALL"
    if [[ $DEV == cuda ]]; then
        expect=("torchrun starts 2 processes on this node and each needs a GPU of its own"
            "would put all 2 processes of this node on one GPU")
    else
        expect=("CUDA is not available" "CUDA is not available")  # the dry run: no GPU
    fi
    status=0
    for i in 0 1; do
        device=(cuda cuda:0)
        out="$WORK/torchrun-$i.log"
        CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-0} timeout 100 "$PY" -m torch.distributed.run \
            --standalone --nproc_per_node 2 -m moco pretrain "run.device=${device[$i]}" \
            optim.epochs=1 "run.out_dir=$WORK/runs" "data.source=$DATA" run.progress=false \
            "${small[@]}" >"$out" 2>&1
        rc=$?
        seen=$(grep -c "${expect[$i]}" "$out")
        echo "run.device=${device[$i]}: torchrun exit $rc; '${expect[$i]}' in $seen lines"
        grep -m 2 "moco pretrain" "$out" || tail -n 20 "$out"
        if [[ $rc -eq 0 || $seen -lt 1 ]]; then status=1; fi
    done
    exit $status
fi

# ----------------------------------------------------------------------- the check

DRY=0
case "${1:-}" in
    --cpu-dry-run) DRY=1 ;;
    "") ;;
    *) echo "usage: $0 [--cpu-dry-run]" >&2; exit 2 ;;
esac
LOG=${GPU_CHECK_LOG:-gpu_check.log}
WORK=${GPU_CHECK_DIR:-$(mktemp -d /tmp/moco-gpu-check.XXXXXX)}
mkdir -p "$WORK"
export WORK PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if (( DRY )); then
    BUDGET=${GPU_CHECK_BUDGET_S:-1800}
    export DEV=cpu DATA="$WORK/data" CUDA_VISIBLE_DEVICES=
    export SMALL="model.width=0.125 model.queue_size=128 optim.batch_size=64 eval.knn_k=20"
    R50=(--encoder default --batch 32 --queue 256 --repeats 2 --warmup 1)
    AMPS=auto,none  # fp16 is CUDA only
else
    BUDGET=${GPU_CHECK_BUDGET_S:-570}
    export DEV=cuda DATA=bundled SMALL=""
    R50=(--encoder r50 --batch 64 --queue 65536 --repeats 5 --warmup 2)
    AMPS=auto,fp16
fi
read -ra small <<<"$SMALL"
OVERRIDES=("data.source=$DATA" "${small[@]}")
PROBE_OVERRIDES=()
for o in "${OVERRIDES[@]}"; do PROBE_OVERRIDES+=(--override "$o"); done
COMMON=("run.device=$DEV" optim.epochs=1 eval.knn_every=1 run.progress=false
    "run.out_dir=$WORK/runs" "${OVERRIDES[@]}")
START=$SECONDS
SUMMARY=()

say() { echo "$*" | tee -a "$LOG"; }

# step NAME SECONDS COMMAND...: COMMAND time-boxed, its output appended to the log
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    if ((left < 15)); then
        SUMMARY+=("$(printf '%-10s %5s  %s' SKIPPED - "$name (budget spent)")")
        say "== $name: skipped, the ${BUDGET} s budget is spent"
        return
    fi
    ((limit > left)) && limit=$left
    say ""
    say "== $name (at most $limit s, $(date +%T))"
    local t0=$SECONDS rc status=ok
    timeout -k 10 "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    if ((rc == 124 || rc == 137)); then status=TIMEOUT; elif ((rc != 0)); then status="FAIL($rc)"; fi
    SUMMARY+=("$(printf '%-10s %4d s  %s' "$status" $((SECONDS - t0)) "$name")")
    say "== $name: $status in $((SECONDS - t0)) s"
}

say "# moco GPU check $(date -Is) on $(hostname); $([[ $DRY == 1 ]] && echo 'CPU DRY RUN, ')"\
"commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); runs in $WORK"

if ! "$PY" -c "import kornia, omegaconf" 2>/dev/null; then
    step install 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$WORK/site" .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi
if ((DRY)); then  # a small IDX data set cut from the bundled images
    step data 60 "$PY" -c "
import numpy as np, pathlib
from moco.data.idx import write_idx
from moco.data.sources import load_source
d, root = load_source('bundled'), pathlib.Path('$DATA')
root.mkdir(parents=True, exist_ok=True)
for p, x, y, n in (('train', d.train_images, d.train_labels, 512),
                   ('t10k', d.test_images, d.test_labels, 128)):
    write_idx(root / f'{p}-images-idx3-ubyte.gz', x[:n, 0].numpy())
    write_idx(root / f'{p}-labels-idx1-ubyte.gz', y[:n].numpy().astype(np.uint8))
print('tiny IDX data in', root)"
else
    step nvidia-smi 20 nvidia-smi
fi
step versions 60 "$PY" scripts/gpu_probe.py versions --device "$DEV"
step sync-audit 150 "$PY" scripts/gpu_probe.py sync-audit --device "$DEV" --amp "$AMPS" \
    --out "$WORK/probe" "${PROBE_OVERRIDES[@]}"
step default-epoch 120 "$PY" -m moco pretrain "${COMMON[@]}" run.name=default
step knn 90 "$PY" -m moco knn "$WORK/runs/default" --device "$DEV" --out "$WORK/knn.json"
step lincls 120 "$PY" -m moco lincls "$WORK/runs/default" --protocol small --device "$DEV" \
    --out "$WORK/lincls.json"
step epochs 420 "$PY" scripts/gpu_probe.py epochs --device "$DEV" --limit 90 \
    --out "$WORK/probe" "${PROBE_OVERRIDES[@]}"
step tests 150 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_device.py \
    tests/test_dist_cuda_paths.py tests/engine/test_step.py
step resume 200 "$SELF" _resume
step torchrun-1gpu 220 "$SELF" _torchrun
step probes 200 "$PY" scripts/gpu_probe.py tf32,cudnn-benchmark,lars,scaler --limit 60 \
    --device "$DEV" "${R50[@]}"
if ((DRY)); then
    step peer 120 "$PY" bench/peer.py --sections bn,step --device cpu --batch 32 \
        --repeats 1 --warmup 1
    step step_ratio 120 "$PY" bench/step_ratio.py --encoder default --batch 32 --device cpu \
        --repeats 1 --warmup 1 --inner 2
    step speed_options 200 "$PY" bench/speed_options.py --encoder default --batch 32 \
        --device cpu --repeats 1 --warmup 1 --check-steps 2 --check-seeds 2 \
        --options channels_last,bf16,fused_sgd
    step compile-ddp 200 "$PY" scripts/gpu_probe.py compile-ddp --device cpu \
        --encoder default --batch 16 --queue 256 --repeats 2 --warmup 1
    step speed-compile 240 "$PY" bench/speed_options.py --encoder default --batch 32 \
        --device cpu --repeats 1 --warmup 1 --check-steps 0 --options compile
else
    step peer 120 "$PY" bench/peer.py --sections step --device cuda --preset moco_cifar_demo \
        --batch 512 --repeats 10
    step step_ratio 120 "$PY" bench/step_ratio.py --encoder r50 --batch 64 --device cuda \
        --repeats 5 --inner 10
    step speed_options 200 "$PY" bench/speed_options.py --encoder r50 --batch 64 \
        --device cuda --repeats 5 --warmup 2 --check-steps 30 --check-seeds 2 \
        --options channels_last,bf16,fp16,fused_sgd
    step compile-ddp 150 "$PY" scripts/gpu_probe.py compile-ddp --device cuda \
        --encoder default --batch 256 --queue 4096 --repeats 10
    step speed-compile 240 "$PY" bench/speed_options.py --encoder r50 --batch 64 \
        --device cuda --repeats 5 --warmup 3 --check-steps 0 --options compile
fi

say ""
say "== summary ($((SECONDS - START)) s of a $BUDGET s budget; log $LOG, runs $WORK)"
for line in "${SUMMARY[@]}"; do say "$line"; done
