"""The fleet's HTTP API: what it answers to good and bad requests, through real HTTP."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from leeward.common.clock import ManualClock
from leeward.fleet import auth
from leeward_protocol.fleet import Catalog, Environment, ErrorBody, Role
from tests.conftest import Api, until


def error_of(body: Any) -> Any:
    return ErrorBody.model_validate(body).error


async def test_health_metrics_openapi_need_no_token(start_fleet, config_factory, sqlite_url):
    async with start_fleet(config_factory(sqlite_url)) as f:
        anonymous = f.api.as_(None)
        status, body = await anonymous.call("GET", "/healthz")
        assert status == 200
        assert body["status"] == "ok"
        assert body["database"] == "sqlite"
        status, doc = await anonymous.call("GET", "/v1/openapi.json")
        assert status == 200
        assert doc["openapi"].startswith("3.1")
        create = doc["paths"]["/v1/environments"]["post"]
        assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/CreateEnvironment"
        )
        assert "CreateDevserver" in doc["components"]["schemas"]
        assert "Environment" in doc["components"]["schemas"]
        await f.api.call("GET", "/v1/catalog")
        status, text = await anonymous.call("GET", "/metrics")
        assert status == 200
        assert "leeward_http_requests_total" in text
        assert 'leeward_host_capacity{host="north-h1"' in text


async def test_catalog_lists_regions_with_free_capacity(start_fleet, config_factory, sqlite_url):
    async with start_fleet(config_factory(sqlite_url, host_cpus=16, host_memory_gib=64)) as f:
        status, body = await f.api.call("GET", "/v1/catalog")
        assert status == 200
        catalog = Catalog.model_validate(body)
        assert [r.name for r in catalog.regions] == ["north", "south"]
        north = catalog.regions[0]
        assert north.free.cpus == 32
        assert north.free.memory_gib == 128
        assert north.accepting
        assert {f.name for f in catalog.flavors} == {"tiny", "small", "gpu"}
        assert catalog.lifespans.container_hours == 36
        # camelCase on the wire
        assert "displayName" in body["regions"][0]
        assert "memoryGib" in body["regions"][0]["free"]


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        (None, "No token"),
        ("Basic abc", "must be `Bearer <token>`"),
        ("Bearer lwt_not-a-real-token", "Unknown token"),
    ],
)
async def test_requests_without_a_valid_token_are_401(
    start_fleet, config_factory, sqlite_url, header, fragment
):
    async with start_fleet(config_factory(sqlite_url)) as f:
        headers = {"Authorization": header} if header else {}
        status, body = await f.api.as_(None).call("GET", "/v1/environments", headers=headers)
        assert status == 401
        assert fragment in error_of(body).message


async def test_an_expired_token_is_401(start_fleet, config_factory, sqlite_url):
    clock = ManualClock()
    async with start_fleet(config_factory(sqlite_url), clock=clock, background=False) as f:
        async with f.fleet.store.write() as session:
            await auth.ensure_user(session, "bob", Role.USER, clock.now())
            token, _ = await auth.issue_token(session, "bob", clock.now(), hours=1)
        bob = f.api.as_(token)
        assert (await bob.call("GET", "/v1/whoami"))[0] == 200
        clock.advance(timedelta(hours=1, seconds=1))
        status, body = await bob.call("GET", "/v1/whoami")
        assert status == 401
        assert "expired" in error_of(body).message


async def test_tokens_are_stored_hashed(start_fleet, config_factory, sqlite_url):
    async with start_fleet(config_factory(sqlite_url)) as f:
        status, body = await f.admin.call("POST", "/v1/admin/users", {"name": "carol"})
        assert status == 201
        status, body = await f.admin.call("POST", "/v1/admin/tokens", {"user": "carol"})
        assert status == 201
        secret = body["token"]
        from sqlalchemy import select

        from leeward.fleet.store.models import TokenRow

        async with f.fleet.store.read() as session:
            digests = (await session.execute(select(TokenRow.digest))).scalars().all()
        assert secret not in digests
        assert auth.digest(secret) in digests
        status, body = await f.api.as_(secret).call("GET", "/v1/whoami")
        assert (status, body) == (200, {"user": "carol", "role": "user"})


async def test_admin_routes_refuse_users(start_fleet, config_factory, sqlite_url):
    async with start_fleet(config_factory(sqlite_url)) as f:
        status, body = await f.api.call("GET", "/v1/admin/hosts")
        assert status == 403
        status, body = await f.admin.call("GET", "/v1/admin/hosts")
        assert status == 200
        assert len(body["hosts"]) == 4


BAD_CREATES = [
    # (body, status, field, fragment)
    ({"kind": "devserver", "flavor": "huge"}, 422, "flavor", "Unknown flavor 'huge'"),
    ({"kind": "devserver", "flavor": "tiny", "region": "mars"}, 422, "region", "Unknown region"),
    ({"kind": "devserver", "flavor": "tiny", "hours": -5}, 422, "hours", "at least 1"),
    ({"kind": "devserver", "flavor": "tiny", "hours": 0}, 422, "hours", "at least 1"),
    ({"kind": "devserver", "flavor": "tiny", "hours": 100000}, 422, "hours", "at most"),
    (
        {"kind": "devserver", "flavor": "tiny", "lifespan": "permanent", "hours": 3},
        422,
        "hours",
        "permanent",
    ),
    ({"kind": "devserver", "flavor": "tiny", "lifespan": "forever"}, 422, "lifespan", "lifespan"),
    ({"kind": "devserver"}, 422, "flavor", "flavor"),
    ({"kind": "spaceship", "flavor": "tiny"}, 422, "kind", "kind"),
    ({"flavor": "tiny"}, 422, "kind", "kind"),
    ({"kind": "devserver", "flavor": "tiny", "colour": "red"}, 422, "colour", "unknown field"),
    ({"kind": "devserver", "flavor": "tiny", "name": "Bad_Name"}, 422, "name", "lowercase"),
    ({"kind": "container", "profile": "cobol"}, 422, "profile", "Unknown container profile"),
    ({"kind": "devserver", "flavor": 7}, 422, "flavor", "flavor"),
    ([1, 2, 3], 422, None, "JSON object"),
]


@pytest.mark.parametrize(("body", "status", "field", "fragment"), BAD_CREATES)
async def test_bad_create_requests_name_the_field(
    start_fleet, config_factory, sqlite_url, body, status, field, fragment
):
    async with start_fleet(config_factory(sqlite_url), background=False) as f:
        got_status, got = await f.api.call("POST", "/v1/environments", body)
        assert got_status == status, got
        error = error_of(got)
        assert error.field == field
        assert fragment.lower() in error.message.lower()
        # Nothing was made.
        assert (await f.api.call("GET", "/v1/environments"))[1] == {"environments": []}


async def test_malformed_and_oversized_bodies_are_4xx(start_fleet, config_factory, sqlite_url):
    config = config_factory(sqlite_url, max_body_bytes=4096)
    async with start_fleet(config, background=False) as f:
        headers = {"Content-Type": "application/json"}
        status, body = await f.api.call("POST", "/v1/environments", data=b"{nope", headers=headers)
        assert status == 400
        assert "not valid JSON" in error_of(body).message
        status, body = await f.api.call("POST", "/v1/environments", data=b"", headers=headers)
        assert status == 400
        assert "needs a JSON body" in error_of(body).message
        status, body = await f.api.call(
            "POST", "/v1/environments", data=b"\xff\xfe\x00garbage", headers=headers
        )
        assert status == 400
        big = b'{"kind": "devserver", "flavor": "' + b"x" * 10_000 + b'"}'
        status, body = await f.api.call("POST", "/v1/environments", data=big, headers=headers)
        assert status == 413
        assert "4096 bytes" in error_of(body).message
        status, body = await f.api.call("GET", "/v1/nothing-here")
        assert status == 404
        assert error_of(body).code == "not_found"
        status, body = await f.api.call("PUT", "/v1/catalog")
        assert status == 405
        status, body = await f.api.call(
            "POST",
            "/v1/environments",
            {"kind": "devserver", "flavor": "tiny"},
            headers={"Idempotency-Key": "x" * 200},
        )
        assert status == 422
        assert error_of(body).field == "Idempotency-Key"


async def test_lifecycle_and_another_users_environment_is_404(
    start_fleet, config_factory, sqlite_url
):
    async with start_fleet(config_factory(sqlite_url)) as f:
        status, body = await f.api.call(
            "POST",
            "/v1/environments",
            {"kind": "devserver", "flavor": "tiny", "name": "box", "hours": 8},
        )
        assert status == 202, body
        env = Environment.model_validate(body)
        assert env.state == "provisioning"
        assert env.fqdn == f"box.{env.region}.leeward.test"
        assert env.address is not None
        assert env.owner == "alice"
        running = await f.api.wait_state(env.id, {"running"})
        assert running["readyAt"] is not None

        # Its agent's heartbeats (every second in this config) reach the fleet.
        async def last_seen() -> bool:
            return (await f.api.call("GET", f"/v1/environments/{env.id}"))[1][
                "lastSeenAt"
            ] is not None

        await until(last_seen, "a heartbeat was recorded", timeout=15)

        mallory = await f.user("mallory")
        for method, path, payload in [
            ("GET", f"/v1/environments/{env.id}", None),
            ("GET", "/v1/environments/box", None),
            ("DELETE", f"/v1/environments/{env.id}", None),
            ("POST", f"/v1/environments/{env.id}/extend", {"hours": 1}),
        ]:
            status, body = await mallory.call(method, path, payload)
            assert status == 404, (method, path, body)
            assert "No environment" in error_of(body).message
        assert (await mallory.call("GET", "/v1/environments"))[1] == {"environments": []}

        # Taken names are refused while the environment lives.
        status, body = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "box"}
        )
        assert status == 409
        assert error_of(body).field == "name"

        before = running["expiresAt"]
        status, body = await f.api.call("POST", "/v1/environments/box/extend", {"hours": 4})
        assert status == 200
        assert body["expiresAt"] > before
        status, body = await f.api.call("POST", "/v1/environments/box/extend", {"hours": -1})
        assert status == 422
        assert error_of(body).field == "hours"

        status, body = await f.api.call("DELETE", "/v1/environments/box")
        assert status == 202
        assert body["state"] == "deleting"
        await f.fleet.idle()
        status, body = await f.api.call("GET", f"/v1/environments/{env.id}")
        assert body["state"] == "deleted"
        # The name is free again.
        status, body = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "box"}
        )
        assert status == 202


async def test_permanent_devservers_cannot_be_extended(start_fleet, config_factory, sqlite_url):
    async with start_fleet(config_factory(sqlite_url)) as f:
        status, body = await f.api.call(
            "POST",
            "/v1/environments",
            {"kind": "devserver", "flavor": "tiny", "lifespan": "permanent"},
        )
        assert status == 202
        assert body["expiresAt"] is None
        assert body["lifespan"] == "permanent"
        await f.api.wait_state(body["id"], {"running"})
        status, err = await f.api.call(
            "POST", f"/v1/environments/{body['id']}/extend", {"hours": 1}
        )
        assert status == 409
        assert "permanent" in error_of(err).message


async def test_idempotency_key_returns_the_same_environment(
    start_fleet, config_factory, sqlite_url
):
    async with start_fleet(config_factory(sqlite_url)) as f:
        key = str(uuid.uuid4())
        request = {"kind": "devserver", "flavor": "tiny"}
        first = await f.api.call(
            "POST", "/v1/environments", request, headers={"Idempotency-Key": key}
        )
        again = await f.api.call(
            "POST", "/v1/environments", request, headers={"Idempotency-Key": key}
        )
        assert first[0] == 202
        assert again[0] == 200
        assert again[1]["id"] == first[1]["id"]
        other = await f.api.call(
            "POST",
            "/v1/environments",
            {"kind": "devserver", "flavor": "small"},
            headers={"Idempotency-Key": key},
        )
        assert other[0] == 409
        assert error_of(other[1]).field == "Idempotency-Key"
        # Another user's identical key is theirs alone.
        bob: Api = await f.user("bob")
        theirs = await bob.call(
            "POST", "/v1/environments", request, headers={"Idempotency-Key": key}
        )
        assert theirs[0] == 202
        assert theirs[1]["id"] != first[1]["id"]
        listed = (await f.api.call("GET", "/v1/environments"))[1]["environments"]
        assert len(listed) == 1


async def test_user_certificates_are_for_the_caller_and_short_lived(
    start_fleet, config_factory, sqlite_url, tmp_path
):
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519")
    public = key.export_public_key().decode()
    async with start_fleet(config_factory(sqlite_url)) as f:
        status, body = await f.api.call("POST", "/v1/ssh/certificate", {"publicKey": public})
        assert status == 200, body
        assert body["principals"] == ["alice"]
        cert = asyncssh.import_certificate(body["certificate"])
        assert cert.principals == ["alice"]
        lifetime = datetime.fromisoformat(body["validBefore"]) - datetime.fromisoformat(
            body["validAfter"]
        )
        assert lifetime <= timedelta(hours=16, minutes=2)
        status, body = await f.api.call(
            "POST", "/v1/ssh/certificate", {"publicKey": public, "hours": 48}
        )
        assert status == 422
        assert error_of(body).field == "hours"
        status, body = await f.api.call(
            "POST", "/v1/ssh/certificate", {"publicKey": "ssh-rsa AAAA"}
        )
        assert status == 422
        assert error_of(body).field == "publicKey"
        status, body = await f.api.as_(None).call("GET", "/v1/ssh/authorities")
        assert status == 200
        assert body["hostCa"].startswith("ssh-ed25519 ")
        assert body["userCa"] != body["hostCa"]


@pytest.mark.parametrize("name", ['bob"x', "Bob", "a b", "", "x" * 65, "-dash"])
async def test_user_names_that_could_not_be_ssh_principals_are_refused(
    start_fleet, config_factory, sqlite_url, name
):
    async with start_fleet(config_factory(sqlite_url), background=False) as f:
        status, body = await f.admin.call("POST", "/v1/admin/users", {"name": name})
        assert status == 422
        assert error_of(body).field == "name"
        with pytest.raises(ValueError, match="user name"):
            async with f.fleet.store.write() as session:
                await auth.ensure_user(session, name, Role.USER, f.fleet.clock.now())
        status, body = await f.admin.call("POST", "/v1/admin/users", {"name": "john.doe_2"})
        assert status == 201


async def test_an_agent_that_cannot_start_fails_clearly_and_frees_everything(
    start_fleet, config_factory, sqlite_url
):
    import socket

    config = config_factory(sqlite_url, regions=1, hosts=1)
    # Occupy the first address the region will hand out, on the agents' port.
    network = config.regions[0].network
    squatter = socket.socket()
    squatter.bind((str(network[1]), config.provider.ssh_port))
    squatter.listen()
    try:
        async with start_fleet(config) as f:
            status, body = await f.api.call(
                "POST",
                "/v1/environments",
                {"kind": "devserver", "flavor": "tiny", "name": "unlucky"},
            )
            assert status == 202
            assert body["address"] == str(network[1])
            failed = await f.api.wait_state(body["id"], {"failed"})
            assert "did not start" in failed["statusMessage"]
            assert "in use" in failed["statusMessage"]
            _, catalog = await f.api.call("GET", "/v1/catalog")
            assert (
                catalog["regions"][0]["free"]["cpus"] == catalog["regions"][0]["capacity"]["cpus"]
            )
            # The name is free again, and delete takes the failed one off the list.
            listed = (await f.api.call("GET", "/v1/environments"))[1]["environments"]
            assert [e["state"] for e in listed] == ["failed"]
            status, body = await f.api.call("DELETE", f"/v1/environments/{body['id']}")
            assert (status, body["state"]) == (202, "deleted")
            assert (await f.api.call("GET", "/v1/environments"))[1] == {"environments": []}
            status, again = await f.api.call(
                "POST",
                "/v1/environments",
                {"kind": "devserver", "flavor": "tiny", "name": "unlucky"},
            )
            assert status == 202
            assert again["address"] != str(network[1])
            await f.api.wait_state(again["id"], {"running"})
    finally:
        squatter.close()
