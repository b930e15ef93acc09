"""The programs of a fake TPU VM (see fake_gcloud.py): `python3 -m venv`, the venv's pip and python, and a fake
trainer with train.py's contract: checkpoints (process 0 writes them into $FAKE_GS, every worker reads), refuses
to start over existing checkpoints without --resume, SIGTERM saves and exits 0, the last line of a complete run is
"finished at step N" (printed by process 0 only). Steps: $FAKE_STEPS (8), each $FAKE_STEP_S seconds (0.1);
$FAKE_HOLD_AT=K stalls after step K (until a signal), for a deterministic preemption mid-stage."""

import json
import os
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def make_venv(d: Path) -> int:
    (d / "bin").mkdir(parents=True, exist_ok=True)
    (d / "bin" / "python").write_text(f"#!/bin/sh\nexec {sys.executable} {HERE} venv-python \"$@\"\n")
    (d / "bin" / "pip").write_text("#!/bin/sh\nexit 0\n")
    for f in ("python", "pip"):
        (d / "bin" / f).chmod(0o755)
    return 0


def train(args: list[str]) -> int:
    worker = int(os.environ["FAKE_WORKER"])
    config = args[args.index("--config") + 1]
    resume = "--resume" in args
    gs = Path(os.environ["FAKE_GS"]) / Path(config).stem
    gs.mkdir(parents=True, exist_ok=True)
    ckpt = gs / "checkpoint_step"
    steps, step_s = int(os.environ.get("FAKE_STEPS", 8)), float(os.environ.get("FAKE_STEP_S", 0.1))
    # Worker 0 stands for the whole slice (its checkpoint, its refusal); the others follow it, so that launching
    # workers one after another (as this fake does) cannot race with worker 0's first save.
    start = int(ckpt.read_text()) if ckpt.exists() and (worker == 0 or resume) else 0
    if start and not resume:
        print(f"fusejax: error: {gs}: holds checkpoints (latest step {start}); pass --resume to continue",
              file=sys.stderr)
        return 2
    with (gs.parent / "launches.jsonl").open("a") as f:
        f.write(json.dumps({"worker": worker, "args": args, "start_step": start, "cwd": os.getcwd()}) + "\n")
    stop = {"sig": False}
    signal.signal(signal.SIGTERM, lambda *a: stop.update(sig=True))

    def save(step):
        if worker == 0:
            tmp = ckpt.with_suffix(".tmp")
            tmp.write_text(str(step))
            os.replace(tmp, ckpt)

    hold_at = int(os.environ.get("FAKE_HOLD_AT", 0))
    step = start
    while step < steps:
        while hold_at and step >= hold_at and not stop["sig"]:  # a slow stretch: the slice is preempted here
            time.sleep(0.05)
        time.sleep(step_s)
        step += 1
        print(f"[step {step}/{steps}] loss {1.0 / step:.4f}", flush=True)
        if step % 2 == 0 or stop["sig"]:
            save(step)
        if stop["sig"]:
            print(f"preempted at step {step}", flush=True)
            return 0
    save(step)
    if worker == 0:
        print(f"finished at step {step}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    role, args = argv[0], argv[1:]
    if role == "python3":
        if args[:2] == ["-m", "venv"]:
            return make_venv(Path(args[2]))
        os.execv(sys.executable, [sys.executable] + args)
    if args[:1] == ["-c"]:
        print(f"worker {os.environ['FAKE_WORKER']} sees 4 devices")
        return 0
    if args[:1] == ["train.py"]:
        return train(args[1:])
    print(f"fake worker: unsupported {argv}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
