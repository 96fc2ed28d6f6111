import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFORMANCE = (ROOT / ".." / "shared" / "conformance").resolve()

# tests/wire.py and other helpers import as top-level modules
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


@pytest.fixture
def conformance_dir():
    if not CONFORMANCE.is_dir():
        pytest.skip("../shared/conformance is not present")
    return CONFORMANCE
