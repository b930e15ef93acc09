#!/usr/bin/env bash
# Install fusejax on every worker of a TPU slice, at this checkout's HEAD (pushed to its origin):
#   tpu_scripts/setup_tpu_vm.sh TPU_NAME ZONE [REPO_URL] [--dry-run]
# = tpu_scripts/tpu setup --name TPU_NAME --zone ZONE [--repo REPO_URL]
set -euo pipefail
NAME=${1:?TPU name}; ZONE=${2:?zone}; shift 2
REPO=()
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then REPO=(--repo "$1"); shift; fi
exec "$(dirname "$0")/tpu" setup --name "$NAME" --zone "$ZONE" "${REPO[@]}" "$@"
