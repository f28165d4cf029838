"""Helpers the benchmark scripts share: timing, a reference MLP, the /proc process tree, writing results.

Scripts run as ``python benchmarks/NAME.py`` import it as ``from _common import ...`` (their folder is on
``sys.path``); heavy imports (torch, latentlab) stay inside the functions that need them.
"""

from __future__ import annotations

import json
import os
import time


def timeit(fn, min_time: float = 1.0, min_reps: int = 5, sync=None, max_reps: int | None = None) -> float:
    """Median seconds per call of ``fn`` over repeated calls lasting at least ``min_time`` seconds.

    One warm-up call first; ``sync`` (e.g. ``torch.cuda.synchronize``) runs after every call; at most
    ``max_reps + 1`` timed calls when ``max_reps`` is given.
    """
    fn()
    if sync:
        sync()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t)
        if max_reps is not None and len(times) > max_reps:
            break
    times.sort()
    return times[len(times) // 2]


def mlp(n_in: int, width: int = 128, depth: int = 3):
    """A plain SiLU MLP ``n_in -> 1`` (``depth`` hidden layers of ``width``): the cost floor of a learned V(Q)."""
    import torch

    layers, d = [], n_in
    for _ in range(depth):
        layers += [torch.nn.Linear(d, width), torch.nn.SiLU()]
        d = width
    layers.append(torch.nn.Linear(d, 1))
    return torch.nn.Sequential(*layers)


def children_by_parent() -> dict[int, list[int]]:
    """``{parent pid: [child pids]}`` of every process now running (Linux /proc)."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...)."""
    tree = children_by_parent()
    out, todo = [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def write_results(result: dict, path: str, indent: int = 2, **dump_kwargs) -> str:
    """Write ``result`` as JSON to ``path`` atomically (its folder is created); returns ``path``."""
    from latentlab.io import atomic_output

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_output(path) as tmp, open(tmp, "w") as fh:
        json.dump(result, fh, indent=indent, **dump_kwargs)
    return path
