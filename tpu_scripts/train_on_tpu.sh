#!/usr/bin/env bash
# Run one training stage on every worker of a TPU VM; all workers run the same command (multi-host jax).
#   tpu_scripts/train_on_tpu.sh TPU_NAME ZONE configs/train/llama3.1-8b-sft.yaml [key=value ...] [--resume]
# Use gs:// paths for output_dir (checkpoints) on multi-host slices so every worker sees them. Rerun the same command
# with --resume after a preemption.
set -euo pipefail
NAME=${1:?TPU name}; ZONE=${2:?zone}; CONFIG=${3:?config}; shift 3
gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command \
  "cd fusejax && .venv/bin/python train.py --config $CONFIG $*"
