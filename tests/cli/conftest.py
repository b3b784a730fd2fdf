"""Fixtures for the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .sandbox import Sandbox, make_sandbox


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return make_sandbox(tmp_path)
