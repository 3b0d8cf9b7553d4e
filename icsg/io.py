"""Atomic file writes: a temporary file in the same folder, then ``os.replace``.

A killed job leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside ``path``; rename onto it if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs are ordinary files
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a file so that ``dst`` is either the old file or the whole new one."""
    import shutil

    with atomic_path(dst, suffix=Path(dst).suffix) as tmp:
        shutil.copyfile(src, tmp)


def atomic_save_npz(path: str | os.PathLike, **arrays) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def load_weights_npz(path: str | os.PathLike, what: str, keys: tuple[str, ...], missing_hint: str,
                     optional: tuple[str, ...] = ()) -> dict:
    """The named arrays of a weights file saved by ``atomic_save_npz``, read without pickle (and those of
    ``optional`` the file has); WeightsError naming the file and ``what`` it holds when it is missing (with
    ``missing_hint``), truncated or foreign."""
    from icsg.errors import WeightsError

    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: {what} missing ({missing_hint})")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: np.asarray(f[k]) for k in keys + tuple(k for k in optional if k in f.files)}
    except Exception as exc:  # zipfile.BadZipFile, KeyError, ValueError on a truncated or foreign file
        raise WeightsError(f"{path}: cannot read {what} ({type(exc).__name__}: {str(exc)[:200]})") from None


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
