"""Fixtures for provider tests: specs with fresh identities on random loopback addresses."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from leeward.fleet.ca import CertificateAuthority
from leeward.providers.base import EnvironmentSpec, Identity
from leeward.providers.local import LocalProvider
from leeward_protocol.fleet import EnvironmentKind, Hardware
from tests.conftest import free_endpoint


@pytest.fixture(scope="session")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate()


@pytest.fixture
def make_spec(ca: CertificateAuthority) -> Callable[..., EnvironmentSpec]:
    def make(owner: str | None = None) -> EnvironmentSpec:
        env_id = "e-" + secrets.token_hex(5)
        name = "p-" + secrets.token_hex(3)
        fqdn = f"{name}.test-region.leeward.test"
        key, cert = ca.issue_host_identity([fqdn, env_id], datetime.now(UTC), timedelta(days=1))
        address, port = free_endpoint()
        return EnvironmentSpec(
            id=env_id,
            name=name,
            fqdn=fqdn,
            kind=EnvironmentKind.CONTAINER,
            region="test-region",
            host="test-h1",
            address=address,
            ssh_port=port,
            hardware=Hardware(cpus=1, memory_gib=1),
            user_ca=ca.user_ca_public,
            fleet_url="http://127.0.0.1:9",
            heartbeat_seconds=30.0,
            identity=Identity(
                owner=owner, host_key=key, host_certificate=cert, agent_token="t-" + env_id
            ),
        )

    return make


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "envs"


@pytest.fixture
async def provider(data_dir: Path) -> AsyncIterator[LocalProvider]:
    local = LocalProvider(data_dir, start_timeout=20)
    yield local
    if data_dir.is_dir():
        for env in data_dir.iterdir():
            await local.stop(env.name)
