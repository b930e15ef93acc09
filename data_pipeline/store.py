"""Resumable JSONL outputs: each unit of work is a part file written aside and renamed into place.

A stage directory holds `part-*.jsonl` files; the union of their rows is the stage's output, whatever the shards or
crash history that produced them. A `kill -9` loses at most the part in flight, and never leaves a partial file
under a final name. Rows are keyed, so a rerun skips keys already present.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator


def write_jsonl_atomic(path: Path, rows: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")
    os.replace(tmp, path)


def read_jsonl(path: Path) -> Iterator[dict]:
    with path.open() as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def parts(stage_dir: Path) -> list[Path]:
    return sorted(stage_dir.glob("**/part-*.jsonl")) if stage_dir.exists() else []


def read_parts(stage_dir: Path) -> Iterator[dict]:
    for p in parts(stage_dir):
        yield from read_jsonl(p)


def done_keys(stage_dir: Path, key) -> set:
    return {key(r) for r in read_parts(stage_dir)}


def part_name(keys: list[str], shard: str = "") -> str:
    """Content-addressed part name: the same work unit always maps to the same file."""
    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]
    return f"part-{shard}{digest}.jsonl"


def shard_of(key: str, count: int) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % count


def parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard '{text}': expected i/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard '{text}': need 0 <= i < N")
    return i, n
