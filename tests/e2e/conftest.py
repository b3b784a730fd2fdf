"""The real-VS-Code end-to-end tests: marked `e2e`, registered here until pyproject.toml lists
the marker."""

from __future__ import annotations

import pytest

E2E_MARKER = "e2e: drives the extension in a real VS Code (code-server) in headless Chromium"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", E2E_MARKER)
