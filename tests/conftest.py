
import pytest
import torch

# one thread: the models are tiny, and OpenMP threads that wait for a busy core
# make a 2-thread run up to 40x slower when anything else runs on the machine
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
