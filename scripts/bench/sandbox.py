"""Sandbox benchmark: two real agents (local provider) of one owner, one in a sandbox and one
without (`sandboxes="off"`, the start before issue 12), the real OpenSSH client, and OpenSSH's
own sshd on loopback for the throughput people would otherwise get.

Figures, from one run on one machine, compared as ratios measured side by side:
- `ssh box true`, straight to each agent, `--runs` times alternately: p50 / p99 and the ratio;
- `scp` of `--mib` MiB into the sandbox through `leeward proxy`, against `scp` to sshd (target:
  at least 0.8 of sshd's rate); also straight to the sandboxed agent, and through the proxy to
  the agent without a sandbox, to show where the time goes.

Usage: scripts/bench/sandbox [--runs 50] [--mib 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from allocate import pct  # noqa: E402
from reconnect import proxy_argv, through_proxy  # noqa: E402
from tests.agent.kit import SSH, Fleet, Kit  # noqa: E402
from tests.conftest import free_port  # noqa: E402

from leeward.fleet.ca import CertificateAuthority  # noqa: E402
from leeward.providers.local import LocalProvider  # noqa: E402

SSHD = "/usr/sbin/sshd"


def timed(argv: list[str], timeout: float = 900) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    return elapsed


def ssh_true(sandboxed: SSH, plain: SSH, runs: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {"sandbox": [], "no_sandbox": []}
    for _ in range(runs):  # alternately, so that the machine's noise falls on both
        times["sandbox"].append(timed(sandboxed.argv("ssh", "box", "true")) * 1000)
        times["no_sandbox"].append(timed(plain.argv("ssh", "box", "true")) * 1000)
    result: dict[str, Any] = {"runs": runs}
    for name, values in times.items():
        result[name] = {"p50_ms": round(pct(values, 50), 1), "p99_ms": round(pct(values, 99), 1)}
    result["p50_ratio"] = round(result["sandbox"]["p50_ms"] / result["no_sandbox"]["p50_ms"], 2)
    return result


class Sshd:
    """OpenSSH's sshd on 127.0.0.1, with a host key and an authorized key of its own, as root
    (the user scp writes as); known_hosts carries its key: host identity is checked."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp / "sshd"
        self.tmp.mkdir()
        self.port = free_port()
        host_key, user_key = self.tmp / "host_key", self.tmp / "user_key"
        for key in (host_key, user_key):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
            )
        (self.tmp / "authorized_keys").write_text(user_key.with_suffix(".pub").read_text())
        host_pub = host_key.with_suffix(".pub").read_text().split()[:2]
        known = self.tmp / "known_hosts"
        known.write_text(f"[127.0.0.1]:{self.port} {' '.join(host_pub)}\n")
        config = self.tmp / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {self.tmp}/authorized_keys\nPidFile {self.tmp}/pid\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\n"
            "StrictModes no\nSubsystem sftp /usr/lib/openssh/sftp-server\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)])
        self.client = [
            "-P", str(self.port), "-i", str(user_key), "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known}", "-o", f"GlobalKnownHostsFile={known}",
        ]  # fmt: skip
        deadline = time.monotonic() + 10
        while subprocess.run(
            ["ssh", *self._ssh_options(), "root@127.0.0.1", "true"], capture_output=True
        ).returncode:
            if time.monotonic() > deadline:
                raise SystemExit("sshd did not answer within 10 s")
            time.sleep(0.1)

    def _ssh_options(self) -> list[str]:
        options = list(self.client)
        options[0] = "-p"
        return options

    def scp(self, source: Path) -> float:
        target = self.tmp / "upload.bin"
        return timed(["scp", *self.client, str(source), f"root@127.0.0.1:{target}"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def scp_into(ssh: SSH, source: Path, *, direct: bool = False) -> float:
    argv = ssh.argv("scp", str(source), "box:upload.bin")
    if direct:
        argv[1:1] = ["-o", "ProxyCommand=none"]
    return timed(argv)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="leeward-bench-sandbox-"))
    kit = Kit(Fleet(ca=CertificateAuthority.generate(), tmp=tmp), tmp)
    sandboxed = LocalProvider(tmp / "envs", start_timeout=30, sandboxes="on")
    plain = LocalProvider(tmp / "envs-plain", start_timeout=30, sandboxes="off")
    boxed, bare = kit.fleet.spec(owner="alice"), kit.fleet.spec(owner="alice")
    await sandboxed.start(boxed)
    await plain.start(bare)
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}",
    }
    sshd = Sshd(tmp)
    try:
        user = kit.user("alice")
        results["ssh_true"] = ssh_true(kit.ssh(boxed, user), kit.ssh(bare, user), args.runs)
        source = tmp / "payload.bin"
        with source.open("wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1 << 20))
        into_sandbox, into_plain = through_proxy(kit, boxed), through_proxy(kit, bare)
        runs = {
            "sshd": sshd.scp(source),
            "sandbox_through_proxy": scp_into(into_sandbox, source),
            "sandbox_direct": scp_into(into_sandbox, source, direct=True),
            "no_sandbox_through_proxy": scp_into(into_plain, source),
        }
        rates = {k: round(args.mib / v, 1) for k, v in runs.items()}
        results["scp"] = {
            "mib": args.mib,
            "mib_per_s": rates,
            "sandbox_through_proxy_vs_sshd": round(runs["sshd"] / runs["sandbox_through_proxy"], 2),
            "sandbox_direct_vs_sshd": round(runs["sshd"] / runs["sandbox_direct"], 2),
        }
        results["proxy"] = " ".join(proxy_argv(boxed, kit)[1:3])
    finally:
        sshd.stop()
        await sandboxed.stop(boxed.id)
        await plain.stop(bare.id)
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--mib", type=int, default=256)
    print(json.dumps(asyncio.run(bench(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
