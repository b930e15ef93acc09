"""Files behind URLs (gs://, s3://, hf://, memory://, ...) through fsspec: read training data on every host of a
pod, write an exported model directory to a bucket. gs:// needs `gcsfs` (in the `tpu` extra)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_CACHE: str | None = None


def is_url(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def localize(src: str) -> list[str]:
    """Local copies of the file(s) a URL names (globs allowed: gs://b/data/*.jsonl), cached per process; local
    paths and hub ids pass through unchanged. Each file keeps its name (row locations in reports stay readable)."""
    if not is_url(src):
        return [src]
    import fsspec

    global _CACHE
    _CACHE = _CACHE or tempfile.mkdtemp(prefix="fusejax-data-")
    try:
        files = fsspec.open_files(src, "rb")
    except (ImportError, ValueError) as e:  # no fsspec backend for the scheme (e.g. gcsfs missing)
        raise FileNotFoundError(f"{src}: cannot open ({type(e).__name__}: {e})") from None
    if not files:
        raise FileNotFoundError(f"{src}: no such file(s)")
    out = []
    for i, of in enumerate(files):
        dest = Path(_CACHE) / str(i) / Path(of.path).name
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".part")
            with of as fin, open(tmp, "wb") as fout:
                while chunk := fin.read(1 << 24):
                    fout.write(chunk)
            os.replace(tmp, dest)
        out.append(str(dest))
    return out


def exists(url: str) -> bool:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    return fs.exists(root)


def localize_dir(url: str) -> str:
    """A local copy of a directory behind a URL (an exported HF model on gs://), cached per process."""
    import fsspec

    global _CACHE
    _CACHE = _CACHE or tempfile.mkdtemp(prefix="fusejax-data-")
    fs, root = fsspec.core.url_to_fs(url)
    if not fs.isdir(root):
        raise FileNotFoundError(f"{url}: not a directory")
    dest = Path(_CACHE) / "dirs" / root.strip("/").replace("/", "__")
    if not dest.exists():
        tmp = dest.with_name(dest.name + ".part")
        fs.get(root.rstrip("/") + "/", str(tmp), recursive=True)
        os.replace(tmp, dest)
    return str(dest)


def ensure_empty_url(url: str) -> None:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    if fs.exists(root) and (not fs.isdir(root) or fs.ls(root)):
        raise FileExistsError(f"{url}: destination exists and is not empty; refusing to overwrite")


def upload_dir(local: str | os.PathLike, url: str) -> None:
    """Copy a local directory's files to URL/ (an existing non-empty destination is refused, as for local
    exports); files go up one by one, config.json last, so a reader that sees config.json sees a whole model."""
    import fsspec

    ensure_empty_url(url)
    fs, root = fsspec.core.url_to_fs(url)
    local = Path(local)
    files = sorted((p for p in local.rglob("*") if p.is_file()), key=lambda p: (p.name == "config.json", str(p)))
    for p in files:
        fs.put_file(str(p), f"{root.rstrip('/')}/{p.relative_to(local).as_posix()}")


def save_hf_to(model, dst: str, tokenizer_dir: str | None = None, dtype: str | None = None,
               staging: str | os.PathLike | None = None) -> Path:
    """save_hf to a local directory or a URL (gs://bucket/dir: written to `staging` first, then uploaded by process
    0). Every process calls it (save_hf's gathers are collective). Returns the local directory."""
    import jax

    from fusejax.models import save_hf

    if not is_url(dst):
        return Path(save_hf(model, dst, tokenizer_dir=tokenizer_dir, dtype=dtype))
    ensure_empty_url(dst)
    local = Path(staging) if staging else Path(tempfile.mkdtemp(prefix="fusejax-export-")) / "hf"
    if jax.process_index() == 0 and local.exists():
        import shutil

        shutil.rmtree(local)  # a previous attempt's staging copy
    out = Path(save_hf(model, str(local), tokenizer_dir=tokenizer_dir, dtype=dtype))
    if jax.process_index() == 0:
        upload_dir(out, dst)
    return out
