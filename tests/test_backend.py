import numpy as np
import pytest

from sashelpers.core import backend


def test_default_is_numpy_without_gpu(monkeypatch):
    monkeypatch.delenv("SASHELPERS_BACKEND", raising=False)
    monkeypatch.setattr(backend, "cupy_usable", lambda: False)
    assert backend.backend_name() == "numpy"
    assert backend.array_module() is np


def test_cupy_chosen_when_usable(monkeypatch):
    monkeypatch.delenv("SASHELPERS_BACKEND", raising=False)
    monkeypatch.setattr(backend, "cupy_usable", lambda: True)
    assert backend.backend_name() == "cupy"


def test_override_numpy_beats_a_usable_gpu(monkeypatch):
    monkeypatch.setenv("SASHELPERS_BACKEND", "numpy")
    monkeypatch.setattr(backend, "cupy_usable", lambda: True)
    assert backend.backend_name() == "numpy"
    assert backend.torch_device().type == "cpu"


def test_forcing_cupy_without_gpu_is_an_error(monkeypatch):
    monkeypatch.setenv("SASHELPERS_BACKEND", "cupy")
    monkeypatch.setattr(backend, "cupy_usable", lambda: False)
    with pytest.raises(RuntimeError, match="cupy"):
        backend.backend_name()


def test_unknown_backend_is_rejected(monkeypatch):
    monkeypatch.setenv("SASHELPERS_BACKEND", "jax")
    with pytest.raises(ValueError, match="jax"):
        backend.backend_name()


def test_probe_is_false_on_this_machine_or_a_real_gpu():
    # cupy_usable must answer (not raise) whether or not cupy is installed
    assert backend.cupy_usable() in (True, False)


def test_array_helpers():
    x = np.arange(3.0)
    assert backend.get_array_module(x) is np
    assert backend.to_numpy(x) is x or np.array_equal(backend.to_numpy(x), x)
    torch = pytest.importorskip("torch")
    assert np.array_equal(backend.to_numpy(torch.arange(3.0)), x)
    assert backend.xgboost_device() in ("cpu", "cuda")
