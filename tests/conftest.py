"""Every test that makes a queue directory leaves one that verifies."""

from __future__ import annotations

import os

import pytest

from logq._verify import verify


@pytest.fixture
def qdir(tmp_path):
    """A fresh queue directory, verified (read-only) after the test."""
    path = str(tmp_path / "q")
    yield path
    if os.path.isdir(path):
        result = verify(path)
        assert result.ok, result.problems
