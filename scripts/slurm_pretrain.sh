#!/usr/bin/env bash
# MoCo v2 pre-training on SLURM: N nodes x 8 GPUs, one torchrun per node.
#
#   sbatch --nodes 2 scripts/slurm_pretrain.sh --data folder:/data/train run.name=v2-r50
#
# (File sources are decoded into memory at data.load_size for now; the streaming
# worker path for ImageNet-sized folders is not wired up yet, see the README.)
# Every node's torchrun meets the others at the first node of the allocation (c10d
# rendezvous); torchrun starts one worker per GPU. The batch (optim.batch_size) and
# BN groups (model.bn_splits) in the config are global: 16 GPUs need bn_splits to be
# a multiple of 16, e.g. model.bn_splits=16 for one BN group per GPU. --max-restarts
# restarts every worker from the last checkpoint when one fails (needs run.name).
#SBATCH --job-name=moco
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=72:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export OMP_NUM_THREADS=$((SLURM_CPUS_PER_TASK / 8))

srun torchrun \
    --nnodes "$SLURM_JOB_NUM_NODES" \
    --nproc_per_node 8 \
    --rdzv_id "$SLURM_JOB_ID" \
    --rdzv_backend c10d \
    --rdzv_endpoint "$head_node:29500" \
    --max-restarts 3 \
    -m moco pretrain --preset moco_v2_imagenet "model.bn_splits=$((SLURM_JOB_NUM_NODES * 8))" "$@"
