"""One bubblewrap sandbox per environment, which every session joins, as on a VM.

The sandbox is started once (when the environment has an owner) and runs on its own: its first
process is bubblewrap's reaper, PID 1 inside, holding a `sleep infinity`; shells, commands, the
SFTP server and setup steps join it later with `nsenter` into its namespaces and `setpriv`. So a
`tmux` started in one SSH session is there in the next, a background job outlives its session,
and neither an agent restart nor a live migration stops anything inside.

Inside: the image's root filesystem read-only, the owner's home at `/home/OWNER` (the host
directory, owned by the owner's host uid), a `/tmp`, `/run` and `/dev/shm` of its own, its own
`/proc` and `/dev`, the environment's name as hostname, and an /etc/passwd naming the owner.
Mount, PID, IPC, UTS, cgroup and user namespaces of its own; the user namespace maps the owner's
uid to itself and nothing else, so root does not exist inside and nothing inside can make another
user namespace. bubblewrap is started *as the owner's uid* (root would map the inside uid to host
root), from a clean environment (the launcher's variables would show in /proc/1/environ).

Where it is, is recorded in `<state dir>/sandbox.json` (PID 1's pid, its start time and its
owner's uid), which the agent reads when it starts again and checks against /proc.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from leeward.common.files import write_atomic
from leeward.sandbox.cgroups import Cgroups, Limits, joining

log = logging.getLogger("leeward.sandbox")

STATE_FILE = "sandbox.json"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
START_SECONDS = 10.0
_CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_NOBODY = "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin"

# ioctls (asm-generic): unlock a pty master, and open its peer without a path
_TIOCSPTLCK = 0x40045431
_TIOCGPTPEER = 0x5441


class SandboxError(Exception):
    """The sandbox cannot be started or joined; the message says why and what to do."""


@dataclass(frozen=True)
class SandboxSpec:
    environment_id: str
    hostname: str
    rootfs: Path
    """The image's root filesystem, bound read-only at /."""
    home: Path
    """The owner's home on the host, bound at /home/OWNER."""
    owner: str
    uid: int
    """The owner's host uid: the same number inside (`id` shows it) and out."""
    state_dir: Path
    """Root's directory for the environment (sandbox.json, sandbox.log); never inside."""
    limits: Limits = field(default_factory=Limits)
    own_network: bool = False
    """A network namespace of its own, reaching out through slirp4netns (`NETWORK`); False: the
    host's network, loopback services included."""
    egress: Path | None = None
    """The network namespace slirp4netns runs in, whose way out the sandbox's connections take;
    None: the caller's."""

    @property
    def inside_home(self) -> str:
        return f"/home/{self.owner}"


@dataclass(frozen=True)
class Running:
    """A sandbox that runs: PID 1 inside, as the host sees it."""

    pid: int
    started: int
    """PID 1's start time (clock ticks after boot): with the pid, who it is."""
    uid: int
    owner: str
    procs: tuple[str, ...] = ()
    """The `cgroup.procs` files a joining process writes itself into."""
    net: bool = False
    """It has a network namespace of its own (joined too)."""

    def alive(self) -> bool:
        return _identity(self.pid) == (self.started, self.uid)

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside as the owner, from the home (or / if it is gone). The caller's
        environment is the process's (pass exactly what it should see)."""
        inside = [
            "setpriv",
            "--no-new-privs",
            "--",
            "nsenter",
            "--target",
            str(self.pid),
            "--user",
            "--mount",
            "--pid",
            "--ipc",
            "--uts",
            "--cgroup",
            *(["--net"] if self.net else []),
            f"--setuid={self.uid}",
            f"--setgid={self.uid}",
            "--",
            "/bin/sh",
            "-c",
            'cd "$HOME" 2>/dev/null || cd /; exec "$@"',
            "sh",
            *argv,
        ]
        return joining([Path(p) for p in self.procs], inside)

    def open_pty(self) -> tuple[int, int]:
        """A pty of the sandbox's own /dev/pts (a host pty would not exist inside): the master
        for the agent, the slave for the session, owned by the owner."""
        master = os.open(
            f"/proc/{self.pid}/root/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC
        )
        try:
            fcntl.ioctl(master, _TIOCSPTLCK, b"\0\0\0\0")
            slave = fcntl.ioctl(master, _TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
            with contextlib.suppress(OSError):
                os.fchown(slave, self.uid, self.uid)
                os.fchmod(slave, 0o620)
        except BaseException:
            os.close(master)
            raise
        return master, slave

    def kill(self) -> None:
        """Stop everything inside: PID 1 going takes the whole PID namespace with it."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def _identity(pid: int) -> tuple[int, int] | None:
    """A process's start time and owner: with its pid, which process it is (not a recycled pid)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19])
        uid = os.stat(f"/proc/{pid}").st_uid
    except (OSError, ValueError, IndexError):
        return None
    if fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent
        return None
    return started, uid


# -- support ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Support:
    """Whether this machine can give each environment a sandbox of its own, and if not why."""

    ok: bool
    reason: str
    cgroups: Cgroups
    network: bool = False
    """Each sandbox can have a network of its own (slirp4netns is installed)."""

    def describe(self) -> str:
        if not self.ok:
            return f"no sandboxes: {self.reason}"
        missing = self.cgroups.unenforced
        limits = (
            f"limits not enforced here: {', '.join(missing)} (no writable cgroup controller)"
            if missing
            else f"cpu, memory and process limits through cgroup v{self.cgroups.version}"
        )
        network = (
            "a network of their own (slirp4netns), the host's loopback out of reach"
            if self.network
            else "the host's network, its loopback services included (install slirp4netns)"
        )
        return f"bubblewrap sandboxes, a host uid per owner, {network}; {limits}"


def probe(rootfs: Path | None = None) -> Support:
    """Whether sandboxes work here: root (to give each owner a uid), bubblewrap, nsenter and
    setpriv, and user namespaces that a non-root uid may create (tried, when `rootfs` is given
    or with the host's own root read-only)."""
    cgroups = Cgroups.detect()
    if not sys.platform.startswith("linux"):
        return Support(False, "sandboxes need Linux (bubblewrap and namespaces)", cgroups)
    if os.geteuid() != 0:
        return Support(
            False,
            "the host is not running as root, so it cannot give each owner a uid of its own",
            cgroups,
        )
    for tool in ("bwrap", "nsenter", "setpriv", "unshare"):
        if shutil.which(tool) is None:
            package = "bubblewrap" if tool == "bwrap" else "util-linux"
            return Support(False, f"{tool} is not installed (apt-get install {package})", cgroups)
    argv = [
        "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
        "bwrap", "--unshare-user", "--unshare-pid", "--disable-userns",
        "--ro-bind", str(rootfs or "/"), "/", "--proc", "/proc", "--dev", "/dev",
        "--", "/bin/true",
    ]  # fmt: skip
    try:
        tried = subprocess.run(
            argv, capture_output=True, text=True, timeout=10, env={"PATH": _CLEAN_PATH}
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Support(False, f"bubblewrap could not run: {exc}", cgroups)
    if tried.returncode != 0:
        why = tried.stderr.strip().splitlines()[-1:] or [f"exit status {tried.returncode}"]
        return Support(
            False,
            f"bubblewrap cannot make a sandbox as an unprivileged user: {why[0]} (are user "
            "namespaces allowed? sysctl kernel.unprivileged_userns_clone=1)",
            cgroups,
        )
    return Support(True, "", cgroups, network=shutil.which("slirp4netns") is not None)


# -- start, find, stop --------------------------------------------------------------------


def find(spec: SandboxSpec) -> Running | None:
    """The environment's sandbox, if it runs and is the one recorded for this owner."""
    running = recorded(spec.state_dir)
    if running is None or running.uid != spec.uid or running.owner != spec.owner:
        return None
    return running


def recorded(state_dir: Path) -> Running | None:
    """The sandbox recorded in `state_dir`, if it runs."""
    try:
        raw = json.loads((state_dir / STATE_FILE).read_text())
        running = Running(**{**raw, "procs": tuple(raw.get("procs", ()))})
    except (OSError, ValueError, TypeError):
        return None
    return running if running.alive() else None


def ensure(spec: SandboxSpec, cgroups: Cgroups) -> Running:
    """The environment's sandbox: the one that runs, or a new one. Blocking (a thread)."""
    running = find(spec)
    if running is not None:
        return running
    return start(spec, cgroups)


def start(spec: SandboxSpec, cgroups: Cgroups) -> Running:
    """Start the sandbox, detached (it outlives its starter), and record it."""
    if not (spec.rootfs / "usr").is_dir():
        raise SandboxError(f"image root {spec.rootfs} is not a root filesystem")
    stop(spec.state_dir, cgroups, spec.environment_id)  # a previous owner's, or a dead one
    _prepare_home(spec)
    procs = cgroups.create(spec.environment_id, spec.limits)
    Path(_STAGE).mkdir(mode=0o755, parents=True, exist_ok=True)
    # The owner first; the system's own names only where the owner does not take them (an
    # owner may be called root: then that name is theirs, with their uid, and 0 has none).
    users = [f"{spec.owner}:x:{spec.uid}:{spec.uid}:{spec.owner}:{spec.inside_home}:/bin/bash"]
    users += [
        line
        for line in ("root:x:0:0:root:/root:/usr/sbin/nologin", _NOBODY)
        if line.split(":", 1)[0] != spec.owner
    ]
    groups = [f"{spec.owner}:x:{spec.uid}:"]
    groups += [g for g in ("root:x:0:", "nogroup:x:65534:") if g.split(":", 1)[0] != spec.owner]
    passwd = _data_fd("\n".join(users) + "\n")
    group = _data_fd("\n".join(groups) + "\n")
    hostname = _data_fd(f"{spec.hostname}\n")
    hosts = _data_fd(f"127.0.0.1\tlocalhost\n127.0.1.1\t{spec.hostname}\n::1\tlocalhost\n")
    info_r, info_w = os.pipe()
    fds = {"passwd": passwd, "group": group, "hostname": hostname, "hosts": hosts}
    bwrap = [
        "setpriv", f"--reuid={spec.uid}", f"--regid={spec.uid}", "--clear-groups", "--",
        "bwrap",
        "--unshare-user", "--uid", str(spec.uid), "--gid", str(spec.uid), "--disable-userns",
        "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--hostname", spec.hostname,
        "--ro-bind", f"{_STAGE}/root", "/",
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/run",
        "--tmpfs", "/dev/shm", "--tmpfs", "/tmp",  # noqa: S108 - its own
        "--tmpfs", "/home", "--bind", f"{_STAGE}/home", spec.inside_home, "--remount-ro", "/home",
        "--ro-bind-data", str(passwd), "/etc/passwd",
        "--ro-bind-data", str(group), "/etc/group",
    ]  # fmt: skip
    # Files bound over the image's own: a read-only root cannot get new ones.
    for fd, target in ((hostname, "/etc/hostname"), (hosts, "/etc/hosts")):
        if (spec.rootfs / target.lstrip("/")).is_file():
            bwrap += ["--ro-bind-data", str(fd), target]
    resolver = spec.rootfs / "etc/resolv.conf"
    if spec.own_network:
        bwrap += ["--unshare-net"]
        fds["resolver"] = _data_fd(f"nameserver {SLIRP_DNS}\n")  # slirp4netns's forwarder
        if resolver.is_file():
            bwrap += ["--ro-bind-data", str(fds["resolver"]), "/etc/resolv.conf"]
    elif Path("/etc/resolv.conf").is_file() and resolver.is_file() and not resolver.is_symlink():
        bwrap += ["--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"]  # the host's, as by DHCP
    bwrap += [
        "--remount-ro", "/dev", "--remount-ro", "/run",  # writable: the home, /tmp, /dev/shm
        "--chdir", spec.inside_home,
        "--clearenv", "--setenv", "HOME", spec.inside_home, "--setenv", "PATH", _CLEAN_PATH,
        "--info-fd", str(info_w),
        "--", "/bin/sleep", "infinity",
    ]  # fmt: skip
    staged = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", _STAGING]
    argv = joining(procs, [*staged, "sh", str(spec.rootfs), str(spec.home), *bwrap])
    log_path = spec.state_dir / "sandbox.log"
    # bubblewrap's output goes to a pipe that is read here until the sandbox is up, then closed:
    # what runs inside (its PID 1, its `sleep`) keeps its descriptors for good, and the owner may
    # trace those processes; a descriptor of a host file there would be a way to write to it.
    out_r, out_w = os.pipe()
    try:
        _detach(argv, (info_w, *fds.values()), out_w)
    except (OSError, subprocess.SubprocessError) as exc:
        os.close(out_r)
        raise SandboxError(f"cannot start the sandbox: {exc}") from None
    finally:
        for fd in (info_w, out_w, *fds.values()):
            os.close(fd)
    try:
        try:
            info = _read_info(info_r)
        finally:
            os.close(info_r)
        identity = _wait_ready(int(info["child-pid"])) if info is not None else None
    finally:
        said = _drain(out_r, log_path)
    if info is None:
        raise SandboxError(f"the sandbox did not start: {said or '(it said nothing)'}")
    pid = int(info["child-pid"])
    if identity is None or identity[1] != spec.uid:
        raise SandboxError(f"the sandbox exited at once: {said or '(it said nothing)'}")
    running = Running(
        pid=pid,
        started=identity[0],
        uid=spec.uid,
        owner=spec.owner,
        procs=tuple(map(str, procs)),
        net=spec.own_network,
    )
    if spec.own_network:
        try:
            _start_network(pid, procs, log_path, spec.egress)
        except SandboxError:
            stop(spec.state_dir, cgroups, spec.environment_id)
            raise
    write_atomic(spec.state_dir / STATE_FILE, json.dumps(asdict(running)), mode=0o600)
    log.info("environment %s: sandbox started (pid %d, uid %d)", spec.environment_id, pid, spec.uid)
    return running


def stop(state_dir: Path, cgroups: Cgroups, environment_id: str) -> bool:
    """Kill the sandbox recorded in `state_dir`, if it runs, and whatever else is left in the
    environment's groups (a sandbox whose record was lost, a join's outer half), then remove the
    groups. Whether a recorded one ran. Idempotent."""
    state = state_dir / STATE_FILE
    try:
        raw = json.loads(state.read_text())
        running: Running | None = Running(**{**raw, "procs": tuple(raw.get("procs", ()))})
    except (OSError, ValueError, TypeError):
        running = None
    ran = running is not None and running.alive()
    if running is not None:
        running.kill()  # PID 1 inside: the whole PID namespace goes with it
    deadline = time.monotonic() + 5.0
    while True:
        left = _members(cgroups, environment_id)
        if running is not None and running.alive():
            left.add(running.pid)
        if not left:
            break
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            log.warning("environment %s: processes %s outlived SIGKILL", environment_id, left)
            break
        time.sleep(0.01)
    state.unlink(missing_ok=True)
    cgroups.remove(environment_id)
    return ran


def _members(cgroups: Cgroups, environment_id: str) -> set[int]:
    found: set[int] = set()
    for procs in cgroups.procs(environment_id):
        with contextlib.suppress(OSError, ValueError):
            found.update(int(pid) for pid in procs.read_text().split())
    return found


_STAGE = "/run/leeward-sandbox"
_STAGING = (
    f"mount -t tmpfs -o mode=0755,size=64k leeward-stage {_STAGE} && "
    f"mkdir {_STAGE}/root {_STAGE}/home && "
    f'mount --bind "$1" {_STAGE}/root && mount --bind "$2" {_STAGE}/home && '
    'shift 2 && exec "$@"'
)
"""bubblewrap runs as the owner, who may not walk the host's path to the image or the home
(the fleet's state directory is root's alone). So root first binds both at a place anyone can
reach (an empty directory of ours, under a tmpfs), in a mount namespace of the sandbox's own,
then becomes the owner."""


def _prepare_home(spec: SandboxSpec) -> None:
    spec.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = spec.home.lstat()
    if (info.st_uid, info.st_gid) != (spec.uid, spec.uid):
        # A new home, or a warm container's: the owner's from now on (what the agent wrote in
        # it before the owner was known included).
        for root, dirs, files in os.walk(spec.home):
            for name in dirs + files:
                os.lchown(os.path.join(root, name), spec.uid, spec.uid)
        os.chown(spec.home, spec.uid, spec.uid)
    os.chmod(spec.home, 0o700)


def _data_fd(text: str) -> int:
    fd = os.memfd_create("leeward-sandbox", 0)  # not CLOEXEC: passed to bwrap
    os.write(fd, text.encode())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _read_info(fd: int) -> dict[str, int] | None:
    """bubblewrap's --info-fd JSON, once it is complete (or None if it exits first)."""
    import select

    data = b""
    deadline = time.monotonic() + START_SECONDS
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
        with contextlib.suppress(ValueError):
            parsed = json.loads(data)
            if isinstance(parsed, dict) and isinstance(parsed.get("child-pid"), int):
                return parsed
    return None


SLIRP_DNS = "10.0.2.3"
NETWORK = (
    "slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback",
    "--enable-sandbox", "--enable-seccomp", "--netns-type=path",
)  # fmt: skip
"""The sandbox's way out: slirp4netns gives its network namespace an interface (10.0.2.100, the
gateway 10.0.2.2, DNS at 10.0.2.3) and carries its connections out as ordinary sockets of the
host, as rootless containers do. `--disable-host-loopback`: the gateway does not lead to the
host's 127.0.0.1 (the fleet, a database that trusts loopback); other environments' loopback
addresses are not routed out at all. It runs in the environment's groups (its memory is the
environment's; a stop kills it with the rest), with its own sandbox and seccomp filter."""


def _start_network(pid: int, procs: list[Path], log_path: Path, egress: Path | None) -> None:
    ready_r, ready_w = os.pipe()
    argv = [*NETWORK, "--ready-fd", str(ready_w), f"/proc/{pid}/ns/net", "tap0"]
    if egress is not None:
        argv = ["nsenter", f"--net={egress}", "--", *argv]
    try:
        with open(log_path, "ab") as log_file:
            _detach(joining(procs, argv), (ready_w,), log_file.fileno())
    except (OSError, subprocess.SubprocessError) as exc:
        os.close(ready_r)
        raise SandboxError(f"cannot start the sandbox's network (slirp4netns): {exc}") from None
    finally:
        os.close(ready_w)
    try:
        import select

        ready, _, _ = select.select([ready_r], [], [], START_SECONDS)
        answer = os.read(ready_r, 1) if ready else b""
    finally:
        os.close(ready_r)
    if answer != b"1":
        raise SandboxError(f"the sandbox's network did not come up: {_tail(log_path)}")


def _detach(argv: list[str], pass_fds: tuple[int, ...], output: int) -> None:
    """Start `argv` through a shell that puts it in the background and exits: it is nobody's
    child here (init reaps it), so it outlives its starter (the agent) and leaves no zombie. A
    clean environment and `/` as its directory: nothing of the starter's shows inside."""
    subprocess.run(
        ["/bin/sh", "-c", '"$@" </dev/null &', "sh", *argv],
        pass_fds=pass_fds,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=output,
        env={"PATH": _CLEAN_PATH},
        cwd="/",
        start_new_session=True,
        timeout=START_SECONDS,
        check=True,
    )


def _drain(fd: int, log_path: Path, limit: int = 65536) -> str:
    """What bubblewrap wrote so far (at most `limit` bytes), appended to the sandbox's log; the
    pipe is closed: anything written to it later goes nowhere."""
    os.set_blocking(fd, False)
    data = b""
    with contextlib.suppress(OSError):
        while len(data) < limit and (chunk := os.read(fd, limit - len(data))):
            data += chunk
    os.close(fd)
    if data:
        with contextlib.suppress(OSError), open(log_path, "ab") as log_file:
            log_file.write(data)
    return " / ".join(data.decode(errors="replace").strip().splitlines()[-3:])


def _wait_ready(pid: int) -> tuple[int, int] | None:
    """PID 1's identity once the sandbox is set up: bubblewrap starts its command (our `sleep`)
    only after its last namespace and mount, so a join before that would find it half made."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        identity = _identity(pid)
        if identity is None:
            return None
        try:
            if Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
                return identity
        except OSError:
            return None
        time.sleep(0.002)
    return None


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " / ".join(lines[-3:]) or "(nothing in its log)"


_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)  # this process's own C library: loaded already


def connect_inside(pid: int, host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to `host`:`port` made from inside the network namespace of `pid` (a
    sandbox's PID 1): its own loopback, its own way out. Blocking; call it in a thread. The
    thread goes back to its own network namespace before this returns."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(own)
        raise
    try:
        if _libc.setns(target, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "cannot enter the sandbox's network")
        try:
            return socket.create_connection((host, port), timeout=timeout)
        finally:
            if _libc.setns(own, _CLONE_NEWNET) != 0:  # a thread left inside would stay there
                os.abort()
    finally:
        os.close(target)
        os.close(own)


def leader(pid: int) -> int:
    """The process inside that a join at `pid` (nsenter, outside) started: the one to signal.
    `pid` itself when it has none (yet, or any more)."""
    with contextlib.suppress(OSError, ValueError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
    return pid
