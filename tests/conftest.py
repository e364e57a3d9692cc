import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

# The tests' networks are tiny: one thread is as fast on an idle machine and, on a busy 2-core one,
# avoids the spin-waiting of two threads that made a toy INN fixture 10x slower.
torch.set_num_threads(1)


@pytest.fixture
def one_thread():
    """One torch thread for the test (restored after): code under test may have changed it, and on a
    busy 2-core machine two threads made tiny-network tests up to 50x slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def results_tmp(tmp_path, monkeypatch):
    """Send results records to a temporary folder."""
    monkeypatch.setenv("SASHELPERS_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs cupy with a CUDA device (numpy-vs-cupy parity); skipped elsewhere")
