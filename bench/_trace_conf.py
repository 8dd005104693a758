"""gunicorn server hooks for ``bench/memory.py --trace``: each worker traces its Python
allocations (tracemalloc) and, every LD_TRACE_EVERY requests it answers, appends to
LD_TRACE_DIR/<pid>.txt what grew since its first such snapshot, by allocation site.

Loaded with ``gunicorn -c bench/_trace_conf.py``; never by the product.
"""

from __future__ import annotations

import os
import threading
import tracemalloc
from typing import Any

EVERY = int(os.environ.get("LD_TRACE_EVERY", "5000"))
FRAMES = int(os.environ.get("LD_TRACE_FRAMES", "6"))
TOP = 12
_lock = threading.Lock()
_state: dict[str, Any] = {"n": 0, "first": None}
_IGNORED = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
)


def post_fork(server: Any, worker: Any) -> None:
    tracemalloc.start(FRAMES)


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    with _lock:
        _state["n"] += 1
        n = _state["n"]
        if n % EVERY:
            return
        snap = tracemalloc.take_snapshot().filter_traces(_IGNORED)
        first = _state["first"]
        if first is None:
            _state["first"] = snap
            return
    traced = sum(s.size for s in snap.statistics("filename"))
    lines = [f"== after {n:,} requests: {traced / 1024 / 1024:.1f} MiB traced"]
    for stat in snap.compare_to(first, "traceback")[:TOP]:
        where = " <- ".join(
            f"{os.path.relpath(f.filename) if f.filename.startswith('/') else f.filename}"
            f":{f.lineno}"
            for f in list(stat.traceback)[:FRAMES]
        )
        lines.append(f"{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks  {where}")
    with open(os.path.join(os.environ["LD_TRACE_DIR"], f"{os.getpid()}.txt"), "a") as f:
        f.write("\n".join(lines) + "\n")
