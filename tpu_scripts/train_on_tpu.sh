#!/usr/bin/env bash
# Start one training stage on every worker of a TPU slice, detached (logs: tpu_scripts/tpu logs --run NAME):
#   tpu_scripts/train_on_tpu.sh TPU_NAME ZONE configs/train/llama3.1-8b-sft.yaml [key=value ...] [--resume]
# = tpu_scripts/tpu launch --name TPU_NAME --zone ZONE --config CONFIG [key=value ...] [--resume]
# On spot slices prefer `tpu_scripts/tpu run ...`, which also recreates the slice and resumes after a preemption.
set -euo pipefail
NAME=${1:?TPU name}; ZONE=${2:?zone}; CONFIG=${3:?config}; shift 3
exec "$(dirname "$0")/tpu" launch --name "$NAME" --zone "$ZONE" --config "$CONFIG" "$@"
