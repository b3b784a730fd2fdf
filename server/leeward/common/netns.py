"""Sockets made inside another network namespace (a host of the local fleet, a sandbox), and which
namespace a process is in. A socket keeps the namespace it was made in for its whole life, so only
its creation needs the thread to step inside; binding, listening and connecting can then happen
from any thread, the event loop's included. Python 3.11 has no `os.setns`, hence ctypes."""

from __future__ import annotations

import ctypes
import os
import socket
from pathlib import Path

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)  # this process's own C library: loaded already


def socket_in(
    netns: Path,
    family: socket.AddressFamily = socket.AF_INET,
    type: socket.SocketKind = socket.SOCK_STREAM,  # socket.socket's own name
) -> socket.socket:
    """A new socket in the network namespace at `netns` (/run/netns/NAME, /proc/PID/ns/net).
    Only the calling thread steps in, for the few system calls it takes, and it goes back to its
    own namespace before this returns; if it cannot, the process aborts, since a thread left
    inside would open every later connection of whatever runs on it in the wrong network.
    Blocking in principle (a thread is the safe place for it); in practice it does not wait."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter(netns)
        try:
            return socket.socket(family, type)
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                os.abort()
    finally:
        os.close(own)


def current(pid: int | str = "self") -> str:
    """The network namespace of process `pid` ("self": this process's main thread;
    "thread-self": the calling thread), as the kernel names it in /proc (net:[INODE]): two
    processes are in the same network exactly when these are equal."""
    return f"net:[{os.stat(f'/proc/{pid}/ns/net').st_ino}]"


def of(netns: Path) -> str:
    """The identifier `current` gives for the namespace at `netns` (/run/netns/NAME)."""
    return f"net:[{os.stat(netns).st_ino}]"


def enter(netns: Path) -> None:
    """Move the calling thread into the network namespace at `netns`, for good: every socket it
    makes from now on is made there (an agent whose environment moved to another host calls it
    on its event loop's thread, then listens again). Threads started later by this one are born
    there too; those that exist already stay where they are."""
    target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(
                error, f"cannot enter this network namespace: {os.strerror(error)}", netns
            )
    finally:
        os.close(target)
