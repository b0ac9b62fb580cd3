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


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if a model (toy or diffusers), a detector or a CLIP model starts
    loading: the command line's checks must refuse bad arguments before anything loads."""
    import numina_hooks.eval.detectors as detectors
    import numina_hooks.toy.model as toy_model
    from numina_hooks import cli
    from numina_hooks.eval import model_loading

    def refuse(*args, **kwargs):
        raise AssertionError("something was loaded although the arguments were bad")

    monkeypatch.setattr(cli, "_load_pipeline", refuse)
    monkeypatch.setattr(toy_model, "load_toy_pipeline", refuse)
    monkeypatch.setattr(model_loading, "load_model", refuse)
    monkeypatch.setattr(detectors, "make_counter", refuse)
