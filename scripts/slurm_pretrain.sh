#!/usr/bin/env bash
# MoCo v2 pre-training on SLURM: N nodes x 8 GPUs, one torchrun per node.
#
#   sbatch --nodes 2 scripts/slurm_pretrain.sh --data folder:/data/imagenet run.name=v2-r50
#
# The images are streamed (data.stream=true): each GPU's process decodes its share of
# every step in data.workers DataLoader worker processes. Decoded into memory, each of
# the 8 processes of a node would hold all of ImageNet at 224 px (193 GB; a run in
# memory refuses when the node cannot hold that). Each process trains on the GPU of its
# LOCAL_RANK (run.device=auto). Every node's torchrun meets the others at the first node
# of the allocation (c10d rendezvous); torchrun starts one worker per GPU. The batch
# (optim.batch_size) and BN groups (model.bn_splits) in the config are global: 16 GPUs
# need bn_splits to be a multiple of 16, e.g. model.bn_splits=16 for one BN group per
# GPU. --max-restarts restarts every worker from the last checkpoint when one fails
# (needs run.name); a hung or dead peer aborts the others after run.dist_timeout
# (NCCL's watchdog, see docs/training-at-scale.md, "Faults").
#SBATCH --job-name=moco
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=72:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
per_gpu=$((SLURM_CPUS_PER_TASK / 8))  # CPU cores for each GPU's process and its workers
export OMP_NUM_THREADS=$per_gpu

srun torchrun \
    --nnodes "$SLURM_JOB_NUM_NODES" \
    --nproc_per_node 8 \
    --rdzv_id "$SLURM_JOB_ID" \
    --rdzv_backend c10d \
    --rdzv_endpoint "$head_node:29500" \
    --max-restarts 3 \
    -m moco pretrain --preset moco_v2_imagenet "model.bn_splits=$((SLURM_JOB_NUM_NODES * 8))" \
    data.stream=true "data.workers=$((per_gpu > 1 ? per_gpu - 1 : 1))" "$@"
