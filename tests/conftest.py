"""Every test that makes a queue directory leaves one that verifies."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from logq.log.verify import verify

# No example database: runs start fresh and nothing is written into the checkout.
settings.register_profile("logq", database=None)
settings.load_profile("logq")


@pytest.fixture
def qdir(tmp_path):
    """A fresh queue directory, verified (read-only) after the test."""
    path = str(tmp_path / "q")
    yield path
    if os.path.isdir(path):
        result = verify(path)
        assert result.ok, result.problems
