"""The gcloud commands for one TPU slice (queued resource + node), and a runner that executes or prints them."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys

# Queued-resource states (`gcloud compute tpus queued-resources describe`, field state.state).
QR_WAITING = ("ACCEPTED", "WAITING_FOR_RESOURCES", "PROVISIONING", "CREATING")
QR_ACTIVE = "ACTIVE"
QR_LOST = ("FAILED", "SUSPENDING", "SUSPENDED", "DELETING")
# Node states (`gcloud compute tpus tpu-vm describe`, field state).
NODE_READY = "READY"
NODE_LOST = ("PREEMPTED", "TERMINATED", "STOPPED", "STOPPING", "DELETING", "HIDDEN", "HIDING")

# Runtime (software) versions per TPU generation, from Cloud TPU's "TPU software versions" page.
DEFAULT_RUNTIME = {"v4": "tpu-ubuntu2204-base", "v5litepod": "v2-alpha-tpuv5-lite", "v5p": "v2-alpha-tpuv5",
                   "v6e": "v2-alpha-tpuv6e"}


class GcloudError(RuntimeError):
    """A gcloud command failed (its exit status and the end of its stderr are in the message)."""


def default_runtime(accelerator_type: str) -> str:
    gen = accelerator_type.rsplit("-", 1)[0]
    if gen not in DEFAULT_RUNTIME:
        raise ValueError(f"--runtime-version: no default for accelerator type {accelerator_type!r}; pass one "
                         f"(known generations: {', '.join(DEFAULT_RUNTIME)})")
    return DEFAULT_RUNTIME[gen]


@dataclasses.dataclass(frozen=True)
class Slice:
    """One TPU slice: a queued resource NAME holding one node (the TPU VMs) of the same name."""

    name: str
    zone: str
    accelerator_type: str = "v4-8"  # v4-8, v5litepod-16, v5p-8, v6e-8, ...
    runtime_version: str | None = None  # default per generation (DEFAULT_RUNTIME)
    project: str | None = None  # default: gcloud's configured project
    spot: bool = True  # TRC grants: spot (preemptible) capacity; False = on-demand

    def _where(self) -> list[str]:
        return [f"--zone={self.zone}"] + ([f"--project={self.project}"] if self.project else [])

    def create(self) -> list[str]:
        runtime = self.runtime_version or default_runtime(self.accelerator_type)
        return (["gcloud", "compute", "tpus", "queued-resources", "create", self.name, f"--node-id={self.name}",
                 f"--accelerator-type={self.accelerator_type}", f"--runtime-version={runtime}"] + self._where()
                + (["--spot"] if self.spot else []))

    def describe_queued(self) -> list[str]:
        return ["gcloud", "compute", "tpus", "queued-resources", "describe", self.name] + self._where() + [
            "--format=json"]

    def delete(self) -> list[str]:
        """Deletes the queued resource and (--force) its node."""
        return (["gcloud", "compute", "tpus", "queued-resources", "delete", self.name] + self._where()
                + ["--force", "--quiet"])

    def describe_node(self) -> list[str]:
        return ["gcloud", "compute", "tpus", "tpu-vm", "describe", self.name] + self._where() + ["--format=json"]

    def ssh(self, command: str, worker: str | int = "all") -> list[str]:
        return (["gcloud", "compute", "tpus", "tpu-vm", "ssh", self.name] + self._where()
                + [f"--worker={worker}", f"--command={command}"])

    def scp_from(self, remote: str, local: str, worker: int) -> list[str]:
        return (["gcloud", "compute", "tpus", "tpu-vm", "scp", f"{self.name}:{remote}", local] + self._where()
                + [f"--worker={worker}"])


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: str = ""
    stderr: str = ""


SECRET_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def redact(text: str) -> str:
    """Printed commands show `$HF_TOKEN` where a forwarded token's value would stand."""
    for name in SECRET_VARIABLES:
        value = os.environ.get(name)
        if value:
            text = text.replace(value, f"${name}")
    return text


class Gcloud:
    """Runs gcloud argv lists (`GCLOUD` env var: another executable), or prints them with dry_run."""

    def __init__(self, dry_run: bool = False, out=None):
        self.dry_run = dry_run
        self.out = out or sys.stdout
        self.executable = os.environ.get("GCLOUD", "gcloud")

    def run(self, argv: list[str], check: bool = True, capture: bool = True, timeout: float | None = None) -> Result:
        if self.dry_run:
            print(redact(shlex.join(argv)), file=self.out, flush=True)
            return Result(0)
        try:
            p = subprocess.run([self.executable] + argv[1:], text=True, timeout=timeout,
                               capture_output=capture, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise GcloudError(f"{self.executable}: not found; install the Google Cloud SDK (gcloud)") from None
        except subprocess.TimeoutExpired:
            return Result(124, "", f"timed out after {timeout}s")
        result = Result(p.returncode, p.stdout or "", p.stderr or "")
        if check and p.returncode != 0:
            raise GcloudError(redact(f"{shlex.join(argv[:6])} ... failed (exit {p.returncode}): "
                                     f"{result.stderr.strip()[-500:]}"))
        return result

    def describe(self, argv: list[str]) -> dict | None:
        """A describe command's JSON, or None when the resource does not exist."""
        r = self.run(argv, check=False)
        if self.dry_run:
            return None
        if r.returncode != 0:
            if "NOT_FOUND" in r.stderr or "not found" in r.stderr.lower():
                return None
            raise GcloudError(f"{shlex.join(argv[:6])} failed (exit {r.returncode}): {r.stderr.strip()[-500:]}")
        return json.loads(r.stdout)


def queued_state(info: dict | None) -> str | None:
    """state.state of a queued resource's JSON (None when it does not exist)."""
    if info is None:
        return None
    state = info.get("state")
    return state.get("state") if isinstance(state, dict) else state


def worker_count(node: dict | None) -> int:
    """Hosts in the slice: one network endpoint per TPU VM worker."""
    return max(1, len((node or {}).get("networkEndpoints") or []))
