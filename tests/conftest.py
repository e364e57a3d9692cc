import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def results_tmp(tmp_path, monkeypatch):
    """Send results records to a temporary folder."""
    monkeypatch.setenv("SASHELPERS_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"
