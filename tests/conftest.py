import sys
from pathlib import Path

import pytest
import torch

# The research helpers the tests share with the benchmarks (synthetic attention scenes, the
# toy identify study) live in benchmarks/, outside the installed package.
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.append(str(BENCHMARKS))  # last: never shadows an installed module

# one thread: the models are tiny, and OpenMP threads that wait for a busy core
# make a 2-thread run up to 40x slower when anything else runs on the machine
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
