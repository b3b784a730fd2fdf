"""Fixtures for relay tests: the fleet's CA and specs from the agent kit, a local provider, and
the `leeward proxy` console script."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from leeward.fleet.ca import CertificateAuthority
from leeward.providers.local import LocalProvider
from tests.agent.kit import Fleet, Kit

LEEWARD = str(Path(sys.executable).parent / "leeward")


@pytest.fixture(scope="session")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate()


@pytest.fixture
def fleet(ca: CertificateAuthority, tmp_path: Path) -> Fleet:
    return Fleet(ca=ca, tmp=tmp_path)


@pytest.fixture
def kit(fleet: Fleet, tmp_path: Path) -> Kit:
    return Kit(fleet, tmp_path)


@pytest.fixture
async def provider(tmp_path: Path) -> AsyncIterator[LocalProvider]:
    data_dir = tmp_path / "envs"
    local = LocalProvider(data_dir, start_timeout=20)
    yield local
    if data_dir.is_dir():
        for env in data_dir.iterdir():
            await local.stop(env.name)
