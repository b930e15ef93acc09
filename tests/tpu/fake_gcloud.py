"""A fake `gcloud` for the TPU scripts' tests: records every call and simulates one TRC slice's life.

State lives in $FAKE_GCLOUD_ROOT (state.json, calls.jsonl). A queued resource goes WAITING_FOR_RESOURCES ->
PROVISIONING -> ACTIVE on successive describes; its node is then READY with `workers` TPU VMs, each a directory
vms/NAME-INCARNATION/worker-I used as $HOME for `tpu-vm ssh --command` (run with bash, for real). On those VMs
`python3 -m venv` makes a .venv whose python runs fake_worker.py (a trainer that checkpoints into $FAKE_GS, the
stand-in for a gs:// bucket shared by all incarnations). With scenario.preempt_at_step = K, the trainers of the
first `preemptions` (1) slices stall after checkpointing step K, and the next poll of that running stage preempts
the slice: its processes are killed, the node turns PREEMPTED and the queued resource SUSPENDED, and the VM
directories are gone for good (a recreated slice starts from a bare disk). scenario.unavailable_describes lists
the queued-resource describe calls (1-based) that fail with UNAVAILABLE, as the API sometimes does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(os.environ["FAKE_GCLOUD_ROOT"])
STATE = ROOT / "state.json"
HERE = Path(__file__).resolve().parent


def load() -> dict:
    if STATE.exists():
        return json.loads(STATE.read_text())
    return {"qrs": {}, "incarnations": 0, "polls": 0, "preempted": 0,
            "scenario": {"workers": 2, "preempt_at_step": 0, "waiting_describes": 1}}


def save(st: dict) -> None:
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(st, indent=1))
    os.replace(tmp, STATE)


def flag(args: list[str], name: str) -> str | None:
    for a in args:
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


def not_found(kind: str, name: str) -> int:
    print(f"ERROR: (gcloud.compute.tpus.{kind}) NOT_FOUND: Resource '{name}' was not found", file=sys.stderr)
    return 1


def vm_dir(qr: dict, worker: int) -> Path:
    return ROOT / "vms" / f"{qr['name']}-{qr['incarnation']}" / f"worker-{worker}"


def kill_vm(qr: dict) -> None:
    """The VMs go away: every process started on them dies, their disks are discarded."""
    for w in range(qr["workers"]):
        for pid_file in (vm_dir(qr, w) / "fusejax-runs").glob("*/pid"):
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError, PermissionError):
                pass
    shutil.rmtree(ROOT / "vms" / f"{qr['name']}-{qr['incarnation']}", ignore_errors=True)


def stub_bin() -> Path:
    """bin/python3 on the fake VMs: `-m venv DIR` makes a venv whose python is the fake worker."""
    b = ROOT / "vm-bin"
    if not b.exists():
        b.mkdir()
        (b / "python3").write_text(f"#!/bin/sh\nexec {sys.executable} {HERE / 'fake_worker.py'} python3 \"$@\"\n")
        (b / "python3").chmod(0o755)
    return b


def ssh(st: dict, qr: dict, worker_flag: str, command: str) -> int:
    workers = range(qr["workers"]) if worker_flag == "all" else [int(worker_flag)]
    is_poll = "exit_code ]; then cat" in command
    rc = 0
    for w in workers:
        home = vm_dir(qr, w)
        home.mkdir(parents=True, exist_ok=True)
        k = st["scenario"].get("preempt_at_step", 0)
        hold = k if k and qr["incarnation"] <= st["scenario"].get("preemptions", 1) else 0
        env = dict(os.environ, HOME=str(home), PATH=f"{stub_bin()}:{os.environ['PATH']}", FAKE_WORKER=str(w),
                   FAKE_GS=str(ROOT / "gs"), FAKE_WORKERS=str(qr["workers"]), FAKE_HOLD_AT=str(hold))
        p = subprocess.run(["bash", "-c", command], cwd=home, env=env, capture_output=True, text=True)
        sys.stdout.write(p.stdout)
        sys.stderr.write(p.stderr)
        rc = max(rc, p.returncode)
        if is_poll and p.stdout.strip() == "running":
            st["polls"] += 1
            ckpts = list((ROOT / "gs").glob("*/checkpoint_step"))
            reached = max((int(c.read_text()) for c in ckpts), default=0)
            if hold and reached >= hold:
                st["preempted"] += 1
                kill_vm(qr)
                qr["node_state"], qr["state"] = "PREEMPTED", "SUSPENDED"
                print("ssh: connect to host 10.0.0.2 port 22: Connection reset by peer", file=sys.stderr)
                return 255
    return rc


def main(argv: list[str]) -> int:
    ROOT.mkdir(parents=True, exist_ok=True)
    with (ROOT / "calls.jsonl").open("a") as f:
        f.write(json.dumps(argv) + "\n")
    st = load()
    try:
        return dispatch(st, argv)
    finally:
        save(st)


def dispatch(st: dict, argv: list[str]) -> int:
    if argv[:3] != ["compute", "tpus", "queued-resources"] and argv[:3] != ["compute", "tpus", "tpu-vm"]:
        print(f"fake gcloud: unsupported command {argv}", file=sys.stderr)
        return 2
    group, verb, rest = argv[2], argv[3], argv[4:]
    if not flag(rest, "zone"):
        print("ERROR: (gcloud) --zone is required here", file=sys.stderr)
        return 2
    if verb == "scp":
        src, dst = rest[0], rest[1]
        name, remote = src.split(":", 1)
        qr = st["qrs"].get(name)
        if qr is None or qr["node_state"] != "READY":
            return 255
        path = vm_dir(qr, int(flag(rest, "worker"))) / remote.removeprefix("~/")
        if not path.exists():
            print(f"scp: {remote}: No such file or directory", file=sys.stderr)
            return 1
        shutil.copyfile(path, dst)
        return 0
    name = rest[0]
    qr = st["qrs"].get(name)
    if group == "queued-resources" and verb == "create":
        if qr is not None:
            print(f"ERROR: (gcloud.compute.tpus.queued-resources.create) ALREADY_EXISTS: {name}", file=sys.stderr)
            return 1
        for required in ("node-id", "accelerator-type", "runtime-version"):
            if not flag(rest, required):
                print(f"ERROR: (gcloud) --{required} is required", file=sys.stderr)
                return 2
        st["incarnations"] += 1
        st["qrs"][name] = {"name": name, "state": "WAITING_FOR_RESOURCES", "describes": 0, "node_state": None,
                           "incarnation": st["incarnations"], "workers": st["scenario"]["workers"],
                           "spot": "--spot" in rest, "type": flag(rest, "accelerator-type")}
        return 0
    if group == "queued-resources" and verb == "describe":
        st["describe_calls"] = st.get("describe_calls", 0) + 1
        if st["describe_calls"] in st["scenario"].get("unavailable_describes", []):
            print("ERROR: (gcloud.compute.tpus.queued-resources.describe) UNAVAILABLE: try again", file=sys.stderr)
            return 1
        if qr is None:
            return not_found("queued-resources.describe", name)
        qr["describes"] += 1
        if qr["state"] == "WAITING_FOR_RESOURCES" and qr["describes"] > st["scenario"]["waiting_describes"]:
            qr["state"] = "PROVISIONING"
        elif qr["state"] == "PROVISIONING":
            qr["state"], qr["node_state"] = "ACTIVE", "READY"
        print(json.dumps({"name": f"projects/p/locations/z/queuedResources/{name}", "state": {"state": qr["state"]}}))
        return 0
    if group == "queued-resources" and verb == "delete":
        if qr is None:
            return not_found("queued-resources.delete", name)
        if "--force" not in rest and qr["node_state"] is not None:
            print("ERROR: queued resource has a node; pass --force", file=sys.stderr)
            return 1
        kill_vm(qr)
        del st["qrs"][name]
        return 0
    if group == "tpu-vm" and verb == "describe":
        if qr is None or qr["node_state"] is None:
            return not_found("tpu-vm.describe", name)
        print(json.dumps({"name": name, "state": qr["node_state"], "acceleratorType": qr["type"],
                          "networkEndpoints": [{"ipAddress": f"10.0.0.{i + 2}"} for i in range(qr["workers"])]}))
        return 0
    if group == "tpu-vm" and verb == "ssh":
        if qr is None or qr["node_state"] != "READY":
            print("ssh: connect to host 10.0.0.2 port 22: Connection refused", file=sys.stderr)
            return 255
        return ssh(st, qr, flag(rest, "worker") or "0", flag(rest, "command"))
    print(f"fake gcloud: unsupported command {argv}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
