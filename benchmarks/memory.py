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
    """Yields a dict filled on exit: ``"peak_bytes"``, the peak memory above the level at
    entry, and ``"peak_total_bytes"``, the peak itself (``torch.cuda.max_memory_allocated``
    on CUDA, the process's RSS sampled every ``interval`` seconds on CPU)."""
    import torch

    result = {"peak_bytes": 0, "peak_total_bytes": 0}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        yield result
        torch.cuda.synchronize()
        result["peak_total_bytes"] = torch.cuda.max_memory_allocated()
        result["peak_bytes"] = result["peak_total_bytes"] - base
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
        result["peak_total_bytes"] = peak[0]
