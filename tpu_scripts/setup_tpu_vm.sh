#!/usr/bin/env bash
# Install fusejax on every worker of a TPU VM (pod slice). Usage:
#   tpu_scripts/setup_tpu_vm.sh TPU_NAME ZONE [REPO_URL]
# Clones (or updates) the repository into ~/fusejax on each worker and installs it with the TPU extra.
set -euo pipefail
NAME=${1:?TPU name}; ZONE=${2:?zone}; REPO=${3:-$(git config --get remote.origin.url)}
gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command "
  set -e
  if [ -d fusejax/.git ]; then git -C fusejax pull --ff-only; else git clone '$REPO' fusejax; fi
  cd fusejax && python3 -m venv .venv && .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[tpu]'
  .venv/bin/python -c 'import jax; print(jax.process_index(), jax.device_count(), jax.devices()[0].device_kind)'
"
