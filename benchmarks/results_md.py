"""Keep benchmarks/RESULTS.md as sections each benchmark script rewrites on its own."""

from __future__ import annotations

import re
from pathlib import Path

HEADER = "# Benchmark results\n\nEvery number here was written by the script named in its section, on this project's 2-core CPU machine.\n"


def update_section(path: Path, name: str, body: str) -> None:
    import fcntl

    # benchmarks may run side by side: serialise the read-modify-write of the shared file
    with open(path.with_suffix(".md.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _update(path, name, body)


def _update(path: Path, name: str, body: str) -> None:
    text = path.read_text() if path.exists() else HEADER
    start, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)
