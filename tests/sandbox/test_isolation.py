"""Environments are sandboxes, tried from inside as a hostile user would, with the real OpenSSH
client against a real fleet: what another environment, the fleet and the host hold is out of
sight and out of reach; sessions share one sandbox, which outlives them, an agent restart and a
live migration; OpenSSH's file tools land in /home/OWNER inside."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from leeward.agent.config import AgentConfig
from leeward.fleet.provision import restart_agent
from leeward.sandbox.cgroups import Cgroups
from leeward.sandbox.sandbox import probe
from tests.conftest import free_port, run_ssh, small_config, ssh_access, until
from tests.fleet.test_openssh import through_forward, tool

pytestmark = pytest.mark.skipif(
    not probe().ok, reason=f"this machine makes no sandboxes: {probe().reason}"
)


async def devserver(api: Any, name: str, **extra: Any) -> dict[str, Any]:
    status, env = await api.call(
        "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": name, **extra}
    )
    assert status == 202, env
    return await api.wait_state(env["id"], {"running"}, timeout=180)


async def ok(paths: Any, alias: str, command: str) -> str:
    code, out, err = await run_ssh(paths, alias, command)
    assert code == 0, f"{command!r} failed ({code}): {err}"
    return out


def host_pids(pattern: bytes) -> list[int]:
    """Host pids whose command line contains `pattern` (what the host sees of the sandboxes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if pattern in (entry / "cmdline").read_bytes().replace(b"\0", b" "):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def test_from_inside_nothing_of_the_fleet_the_host_or_another_environment(
    start_fleet, sqlite_url, tmp_path: Path
):
    config = small_config(tmp_path, sqlite_url, regions=1)
    data_dir = config.provider.data_dir
    assert data_dir is not None and config.database is not None
    async with start_fleet(config) as f:
        bob = await f.user("bob")
        a = await devserver(f.api, "aa")
        b = await devserver(bob, "bb")
        alice_ssh = await ssh_access(f.api, tmp_path / "alice", "alice")
        bob_ssh = await ssh_access(bob, tmp_path / "bob", "bob")
        owners = json.loads((data_dir.parent / "owners.json").read_text())
        assert owners["alice"] != owners["bob"] and min(owners.values()) >= 1000

        # Bob leaves a process running, which alice must not see.
        await ok(bob_ssh, "bb", "nohup sleep 7341 >/dev/null 2>&1 &")
        await until(lambda: host_pids(b"sleep 7341"), "bob's sleep runs")

        # Alice: her own uid, no capabilities, no way to make a user namespace.
        out = await ok(alice_ssh, "aa", "id -u; id -un; hostname; pwd; echo $HOME")
        assert out.split() == [str(owners["alice"]), "alice", "aa", "/home/alice", "/home/alice"]
        status = await ok(alice_ssh, "aa", "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status")
        assert "CapEff:\t0000000000000000" in status and "NoNewPrivs:\t1" in status
        code, _, _ = await run_ssh(alice_ssh, "aa", "unshare --user true")
        assert code != 0, "a user namespace inside would undo the uid mapping"

        # A file she writes is hers on the host too, not root's.
        await ok(alice_ssh, "aa", "echo mine > ~/mine.txt")
        mine = data_dir / a["id"] / "home" / "mine.txt"
        assert mine.stat().st_uid == owners["alice"] and mine.stat().st_gid == owners["alice"]

        # The fleet's state, the database, the admin's credentials, bob's home and agent config.
        agent_b = data_dir / b["id"] / "agent.json"
        secrets_a = AgentConfig.load(data_dir / a["id"] / "agent.json")
        for path in [
            data_dir,
            Path(config.database.split("///", 1)[1]),
            tmp_path,
            data_dir / b["id"] / "home",
            agent_b,
            data_dir / a["id"] / "agent.json",
            Path.home() / ".config" / "leeward",
        ]:
            code, out, _ = await run_ssh(alice_ssh, "aa", f"ls -d '{path}' || cat '{path}'")
            assert code != 0 and not out, f"{path} is visible inside: {out}"
        assert (await ok(alice_ssh, "aa", "ls -A /home")).split() == ["alice"]
        # Her own agent's token and host key are nowhere inside (her environment's own files
        # included: /proc/1 is the sandbox's, not the agent's).
        for secret in (secrets_a.agent_token, secrets_a.host_key.splitlines()[1]):
            code, out, _ = await run_ssh(
                alice_ssh,
                "aa",
                f"grep -rlsF -- '{secret}' /etc /home /tmp /run /var /root "
                "/proc/1/environ /proc/1/cmdline; true",
            )
            assert code == 0 and out == "", f"a secret of the agent's is readable in {out}"

        # Processes: hers only. Not bob's sleep, not the agent, not the fleet.
        seen = await ok(alice_ssh, "aa", "ps -e -o pid=,args=")
        assert "sleep 7341" not in seen and "leeward.agent" not in seen and "python" not in seen
        assert "sleep infinity" in seen, seen  # the sandbox's own PID 1 and its child
        agent_pid = int((data_dir / a["id"] / "agent.pid").read_text())
        for pid in (agent_pid, os.getpid(), host_pids(b"sleep 7341")[0]):
            code, _, _ = await run_ssh(alice_ssh, "aa", f"kill -9 {pid}")
            assert code != 0, f"kill {pid} worked from inside"
        assert host_pids(b"sleep 7341"), "bob's process survived alice's kill"
        assert os.path.exists(f"/proc/{agent_pid}")

        # The network: the environment's own. The fleet's API, the host's loopback services
        # and bob's agent are not reachable from it, straight or through the gateway.
        if probe().network:
            assert (await ok(alice_ssh, "aa", "cat /etc/resolv.conf")).split() == [
                "nameserver",
                "10.0.2.3",
            ]
            fleet_host, fleet_port = f.url.removeprefix("http://").rsplit(":", 1)
            for host, port in [
                (fleet_host, fleet_port),
                ("10.0.2.2", fleet_port),
                ("127.0.0.1", "5432"),
                ("10.0.2.2", "5432"),
                (b["address"], b["sshPort"]),
            ]:
                reach = f"timeout 5 bash -c 'echo > /dev/tcp/{host}/{port}'"
                code, _, _ = await run_ssh(alice_ssh, "aa", reach)
                assert code != 0, f"{host}:{port} is reachable from inside"

        # Writes: the home and /tmp only.
        for target in ("/usr/x", "/etc/x", "/x", "/home/x", "/var/tmp/x", "/dev/x", "/run/x"):
            code, _, _ = await run_ssh(alice_ssh, "aa", f"touch {target}")
            assert code != 0, f"{target} was writable"
        await ok(alice_ssh, "aa", "touch /tmp/x ~/x /dev/shm/x")
        # Nothing inside holds a descriptor of a host file (a traced process could write to it).
        held = await ok(alice_ssh, "aa", "readlink /proc/[0-9]*/fd/* 2>/dev/null; true")
        paths = {link for link in held.split() if link.startswith("/")}
        assert paths <= {"/dev/null", "/dev/pts/0", "/dev/pts/1", "/dev/pts/2", "/dev/ptmx"}, paths

        # What the host sees: her processes run as her uid, none as root, inside her limits.
        await ok(alice_ssh, "aa", "nohup sleep 7342 >/dev/null 2>&1 &")
        pid = (await until(lambda: host_pids(b"sleep 7342"), "alice's sleep runs"))[0]
        assert os.stat(f"/proc/{pid}").st_uid == owners["alice"]
        cgroups = Cgroups.detect()
        if not cgroups.unenforced:
            assert f"/leeward/{a['id']}" in Path(f"/proc/{pid}/cgroup").read_text()
            limits = cgroups.read(a["id"])
            assert limits["pids"] == "4096"
            assert int(limits["memory"]) == 2 << 30  # the tiny flavor's 2 GiB
            assert limits["cpu"] in ("100000", "100000 100000")  # one CPU


async def test_sessions_share_one_sandbox_that_outlives_them(
    start_fleet, sqlite_url, tmp_path: Path
):
    config = small_config(tmp_path, sqlite_url, regions=1, hosts=2)
    config.migration_blackout_seconds = 0.2
    data_dir = config.provider.data_dir
    assert data_dir is not None
    async with start_fleet(config) as f:
        env = await devserver(f.api, "vm")
        paths = await ssh_access(f.api, tmp_path / "alice", "alice")
        await ok(paths, "vm", "tmux new -d -s keep 'sleep 9000'")
        await ok(paths, "vm", "nohup sleep 9001 >/dev/null 2>&1 &")
        shells_pid = (await ok(paths, "vm", "pgrep -f 'sleep 9001'")).strip()

        status, hosts = await f.admin.call("GET", "/v1/admin/hosts")
        target = next(h["name"] for h in hosts["hosts"] if h["name"] != env["host"])
        status, body = await f.admin.call(
            "POST", f"/v1/admin/environments/{env['id']}/migrate", {"host": target}
        )
        assert status == 202, body
        await f.api.wait_state(env["id"], {"running"})
        assert "keep:" in await ok(paths, "vm", "tmux ls"), "tmux lost in the migration"

        # The agent killed, then started again as the fleet does after a crash (with a new
        # identity): what runs in the sandbox goes on.
        agent = data_dir / env["id"] / "agent.pid"
        old = int(agent.read_text())
        os.kill(old, 9)
        await until(lambda: not os.path.exists(f"/proc/{old}"), "the agent is gone")
        await restart_agent(f.fleet, env["id"])
        assert int(agent.read_text()) != old
        code, out, err = await run_ssh(paths, "vm", "tmux ls; pgrep -f 'sleep 9001'")
        assert code == 0, err
        assert "keep:" in out and shells_pid in out.split(), out


def tiny_wheel() -> bytes:
    """A wheel of one module, `leeward_tiny`, made here: nothing is fetched."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        files = {
            "leeward_tiny/__init__.py": "WHO = 'installed'\n",
            "leeward_tiny-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: leeward-tiny\n"
            "Version: 1.0\n",
            "leeward_tiny-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\n"
            "Root-Is-Purelib: true\nTag: py3-none-any\n",
        }
        record = "".join(f"{name},,\n" for name in files) + "leeward_tiny-1.0.dist-info/RECORD,,\n"
        files["leeward_tiny-1.0.dist-info/RECORD"] = record
        for name, text in files.items():
            wheel.writestr(name, text)
    return buffer.getvalue()


async def test_openssh_tools_land_in_the_home_and_installs_stay_in_their_environment(
    start_fleet, sqlite_url, tmp_path: Path
):
    config = small_config(tmp_path, sqlite_url, regions=1)
    data_dir = config.provider.data_dir
    assert data_dir is not None
    async with start_fleet(config) as f:
        one = await devserver(f.api, "one")
        await devserver(f.api, "two")
        paths = await ssh_access(f.api, tmp_path / "alice", "alice")
        ssh_config = str(paths.ssh_config)
        wheel = tmp_path / "leeward_tiny-1.0-py3-none-any.whl"
        wheel.write_bytes(tiny_wheel())

        await tool("scp", "-F", ssh_config, "-q", str(wheel), "one:")
        await tool("sftp", "-F", ssh_config, "-b", "-", "one", stdin=b"mkdir by-sftp\n")
        tree = tmp_path / "tree"
        tree.mkdir()
        (tree / "a.txt").write_text("alpha\n")
        await tool("rsync", "-a", "-e", f"ssh -F {ssh_config}", f"{tree}/", "one:tree/")
        listing = await ok(paths, "one", "ls -A /home/alice; stat -c %U tree/a.txt")
        for name in (wheel.name, "by-sftp", "tree", "alice"):
            assert name in listing.split(), listing
        home = data_dir / one["id"] / "home"
        assert (home / "tree" / "a.txt").read_text() == "alpha\n"
        assert (home / wheel.name).stat().st_uid != 0

        # ssh -L to a service the owner runs inside the sandbox, on its loopback: the home's
        # files served from inside, to this side.
        port = free_port()
        await ok(
            paths,
            "one",
            f"nohup python3 -m http.server {port} --bind 127.0.0.1 >/dev/null 2>&1 &",
        )
        local = free_port()
        forward = await asyncio.create_subprocess_exec(
            "ssh", "-F", ssh_config, "-N", "-o", "ExitOnForwardFailure=yes",
            "-L", f"127.0.0.1:{local}:127.0.0.1:{port}", "one",
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            answer = await through_forward(local, b"GET /tree/a.txt HTTP/1.0\r\n\r\n")
            assert answer.startswith(b"HTTP/1.0 200"), answer
        finally:
            forward.terminate()
            await forward.wait()

        # A dotfile linked the way its owner sees it (/home/alice/...) reaches the profile.
        await ok(
            paths,
            "one",
            "mkdir -p dotfiles && printf '[user]\\n\\tname = Alice\\n' > dotfiles/gitconfig"
            " && ln -s /home/alice/dotfiles/gitconfig .gitconfig",
        )

        async def linked_in_profile() -> bool:
            status, body = await f.api.call("GET", "/v1/profile")
            assert status == 200, body
            return ".gitconfig" in {entry["path"] for entry in body["files"]}

        await until(linked_in_profile, "the linked .gitconfig in the profile", timeout=30)

        # One image, two environments: an install in one is not in the other.
        install = (
            f"python3 -m pip install -q --user --break-system-packages --no-index {wheel.name}"
        )
        await ok(paths, "one", install)
        check = "python3 -c 'import leeward_tiny; print(leeward_tiny.WHO)'"
        assert (await ok(paths, "one", check)).strip() == "installed"
        code, _, err = await run_ssh(paths, "two", check)
        assert code != 0 and "No module named 'leeward_tiny'" in err
