import pathlib
import sys

# cluster_helpers.py sits beside the tests (importlib mode does not add test folders to sys.path)
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import pytest


@pytest.fixture(autouse=True)
def job_secret(monkeypatch):
    """Clients started by hand here share a job secret, as a launcher would give them (the
    processes these tests start inherit it); tests about secrets override or delete it."""
    monkeypatch.setenv("POSEIDON_SECRET", "distributed-tests-" + "0" * 32)
