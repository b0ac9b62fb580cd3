"""Peak memory of a call: CUDA allocator peak on a GPU, sampled RSS growth on CPU."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


@contextmanager
def peak_memory(device: str = "cpu", interval: float = 0.002):
    """Yields a dict whose ``"peak_bytes"`` is filled on exit: the peak memory above
    the level at entry (``torch.cuda.max_memory_allocated`` on CUDA, RSS sampled
    every ``interval`` seconds on CPU)."""
    import torch

    result = {"peak_bytes": 0}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        yield result
        torch.cuda.synchronize()
        result["peak_bytes"] = torch.cuda.max_memory_allocated() - base
        return
    base = _rss()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss())
        result["peak_bytes"] = peak[0] - base
