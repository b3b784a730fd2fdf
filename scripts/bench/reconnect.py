"""Relay benchmark: a real agent (local provider), the real OpenSSH client, `leeward proxy`.

Figures, from one run on one machine:
- reconnect: a `cat` session through the proxy while the agent's network goes dark (`--drops`
  blackouts of 0.2 s; listeners closed, every connection reset): from the path restored (the
  agent's blackout answer) to the first echoed byte through, p50 / p99 (targets 50 / 250 ms);
- proxy start: process start to the first byte forwarded (the SSH banner, through the relay),
  p50 of `--starts` (target 150 ms), beside `python -c pass`;
- throughput: `scp` of `--mib` MiB through the proxy against straight to the agent, as a ratio
  (target >= 0.7), with the CPU time the proxy adds;
- plain ssh (no proxy) across one blackout, as a live migration makes it: does it survive?

Usage: scripts/bench/reconnect [--drops 100] [--starts 20] [--mib 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from allocate import pct  # noqa: E402
from tests.agent.kit import SSH, Fleet, Kit  # noqa: E402

from leeward.agent import control  # noqa: E402
from leeward.agent.config import AgentConfig  # noqa: E402
from leeward.fleet.ca import CertificateAuthority  # noqa: E402
from leeward.providers.local import LocalProvider  # noqa: E402

LEEWARD = str(Path(sys.executable).parent / "leeward")


def proxy_argv(spec: Any, kit: Kit) -> list[str]:
    return [
        LEEWARD,
        "proxy",
        "box",
        "--address",
        spec.address,
        "--port",
        str(spec.relay_port),
        "--fqdn",
        spec.fqdn,
        "--known-hosts",
        str(kit.known_hosts),
        "--no-status",
    ]


def through_proxy(kit: Kit, spec: Any) -> SSH:
    ssh = kit.ssh(spec, kit.user("alice"))
    proxy = " ".join(proxy_argv(spec, kit))
    text = ssh.config.read_text().replace("Host box\n", f"Host box\n  ProxyCommand {proxy}\n")
    ssh.config.write_text(text.replace("  ConnectTimeout 5\n", "  ConnectTimeout 20\n"))
    return ssh


async def blackout(sock: Path, seconds: float) -> float:
    """Dark for `seconds`; returns the monotonic time the agent said it was back."""
    async with asyncio.timeout(30):
        answer = await control.request(sock, {"op": "blackout", "seconds": seconds})
    assert answer["ok"] is True, answer
    return time.monotonic()


async def reconnects(ssh: SSH, drops: int, drop: Callable[[], Awaitable[float]]) -> dict[str, Any]:
    """A `cat` through the proxy, `drops` times cut by `drop` (which returns the moment the
    path is back); the time from then to the next echoed line, each time."""
    proc = await asyncio.create_subprocess_exec(
        *ssh.argv("ssh", "box", "cat"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    arrivals: list[float] = []
    stop, flowing = asyncio.Event(), asyncio.Event()

    async def write() -> None:
        assert proc.stdin is not None
        n = 0
        while not stop.is_set():
            proc.stdin.write(f"{n:015d}\n".encode())
            await proc.stdin.drain()
            n += 1
            await asyncio.sleep(0.002)

    echoed: list[int] = []

    async def read() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            arrivals.append(time.monotonic())
            echoed.append(int(line))
            flowing.set()

    writer, reader = asyncio.create_task(write()), asyncio.create_task(read())
    async with asyncio.timeout(30):
        await flowing.wait()
    latencies = []
    for _ in range(drops):
        await asyncio.sleep(0.15)
        restored = await drop()
        deadline = restored + 30
        while not any(a >= restored for a in arrivals[-200:]):
            assert proc.returncode is None, "ssh exited"
            assert time.monotonic() < deadline, "no byte came through after a drop"
            await asyncio.sleep(0.0005)
        first = next(a for a in arrivals[-200:] if a >= restored)
        latencies.append((first - restored) * 1000)
    stop.set()
    await writer
    proc.stdin.close()
    async with asyncio.timeout(30):
        await proc.wait()
    reader.cancel()
    return {
        "drops": len(latencies),
        "p50_ms": round(pct(latencies, 50), 1),
        "p99_ms": round(pct(latencies, 99), 1),
        "max_ms": round(max(latencies), 1),
        "in_order_no_loss": echoed == list(range(len(echoed))),
        "ssh_exit": proc.returncode,
    }


async def proxy_start(spec: Any, kit: Kit, runs: int) -> dict[str, Any]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *proxy_argv(spec, kit),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout is not None and proc.stdin is not None
        banner = await asyncio.wait_for(proc.stdout.read(4), 30)
        times.append((time.perf_counter() - started) * 1000)
        assert banner == b"SSH-", banner
        proc.stdin.close()
        proc.terminate()
        await proc.wait()
    python = []
    for _ in range(runs):
        started = time.perf_counter()
        bare = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
        await bare.wait()
        python.append((time.perf_counter() - started) * 1000)
    return {
        "runs": runs,
        "start_to_first_byte_p50_ms": round(pct(times, 50), 1),
        "start_to_first_byte_p99_ms": round(pct(times, 99), 1),
        "python_c_pass_p50_ms": round(pct(python, 50), 1),
    }


# Runs the proxy and writes its CPU seconds to a file when it ends; ssh ends its ProxyCommand
# with SIGHUP, which is passed on so the proxy leaves as it would.
CPU_WRAPPER = """
import resource, signal, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
for sig in (signal.SIGHUP, signal.SIGTERM):
    signal.signal(sig, lambda n, f: child.send_signal(n))
child.wait()
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(str(usage.ru_utime + usage.ru_stime))
"""


def scp(ssh: SSH, source: Path, proxy: list[str] | None, cpu_file: Path) -> tuple[float, float]:
    """Seconds for the copy, and the proxy's CPU seconds (0 when direct)."""
    argv = ssh.argv("scp", str(source), "box:upload.bin")
    if proxy is None:
        argv[1:1] = ["-o", "ProxyCommand=none"]
    else:
        wrapper = cpu_file.with_suffix(".py")
        wrapper.write_text(CPU_WRAPPER)
        wrapped = [sys.executable, str(wrapper), str(cpu_file), *proxy]
        command = " ".join(f"'{part}'" for part in wrapped)
        argv[1:1] = ["-o", f"ProxyCommand={command}"]
    cpu_file.unlink(missing_ok=True)
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, timeout=600)
    elapsed = time.perf_counter() - started
    if proxy is None:
        return elapsed, 0.0
    deadline = time.monotonic() + 10
    while not cpu_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return elapsed, float(cpu_file.read_text())


async def plain_ssh_across_a_blackout(kit: Kit, spec: Any, sock: Path) -> dict[str, Any]:
    direct = kit.ssh(spec, kit.user("alice"))
    proc = await asyncio.create_subprocess_exec(
        *direct.argv("ssh", "box", "echo up; sleep 30; echo still here"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"up\n"
    started = time.monotonic()
    await blackout(sock, 0.3)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return {
        "survived": b"still here" in out,
        "exit_code": proc.returncode,
        "seconds_until_it_ended": round(time.monotonic() - started, 2),
        "stderr": err.decode(errors="replace").strip().splitlines()[-1:] or [""],
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="leeward-bench-relay-"))
    kit = Kit(Fleet(ca=CertificateAuthority.generate(), tmp=tmp), tmp)
    provider = LocalProvider(tmp / "envs", start_timeout=30)
    spec = kit.fleet.spec(owner="alice")
    await provider.start(spec)
    sock = AgentConfig.load(tmp / "envs" / spec.id / "agent.json").control_socket
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
    }
    try:
        ssh = through_proxy(kit, spec)
        results["reconnect"] = await reconnects(ssh, args.drops, lambda: blackout(sock, 0.2))
        results["proxy_start"] = await proxy_start(spec, kit, args.starts)
        source = tmp / "payload.bin"
        with source.open("wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1 << 20))
        cpu_file = tmp / "proxy-cpu"
        direct_s, _ = scp(ssh, source, None, cpu_file)
        relay_s, relay_cpu = scp(ssh, source, proxy_argv(spec, kit), cpu_file)
        results["scp"] = {
            "mib": args.mib,
            "direct_mib_per_s": round(args.mib / direct_s, 1),
            "proxy_mib_per_s": round(args.mib / relay_s, 1),
            "ratio": round(direct_s / relay_s, 2),
            "proxy_cpu_seconds": round(relay_cpu, 2),
        }
        source.unlink()
        results["plain_ssh_across_a_blackout"] = await plain_ssh_across_a_blackout(kit, spec, sock)
    finally:
        await provider.stop(spec.id)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drops", type=int, default=100)
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--mib", type=int, default=256)
    print(json.dumps(asyncio.run(bench(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
