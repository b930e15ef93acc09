#!/usr/bin/env bash
# Run one command on a TPU worker, recording RUN_DIR/{pid,log,exit_code}; started detached by `fusejax tpu launch`:
#   setsid nohup tpu_scripts/run_stage.sh RUN_DIR COMMAND... &
# exit_code: 0 the stage finished ("finished at step N" from train.py), 75 it stopped early with a checkpoint
# (SIGTERM / preemption notice / `fusejax tpu stop`; continue with --resume), otherwise the command's own failure.
# Only process 0 prints train.py's final line, so worker 0's exit_code is the one that decides.
set -u
RUN_DIR=${1:?run directory}; shift
mkdir -p "$RUN_DIR"
rm -f "$RUN_DIR/exit_code"
echo $$ > "$RUN_DIR/pid"
trap 'echo "=== SIGTERM $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$RUN_DIR/log"' TERM   # the child handles it
"$@" >> "$RUN_DIR/log" 2>&1 &
child=$!
while wait "$child"; rc=$?; kill -0 "$child" 2>/dev/null; do :; done   # a trapped SIGTERM interrupts wait
wait "$child"; rc=$?                                                     # the child's own status (bash keeps it)
if [ "$rc" -eq 0 ] && ! tail -n 5 "$RUN_DIR/log" | grep -q "^finished at step"; then rc=75; fi
echo "=== exit $rc $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$RUN_DIR/log"
echo "$rc" > "$RUN_DIR/exit_code.tmp" && mv "$RUN_DIR/exit_code.tmp" "$RUN_DIR/exit_code"
