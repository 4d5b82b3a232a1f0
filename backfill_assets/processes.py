"""Server commands (``dagster dev``) in their own process group, started and stopped whole.

``dagster dev`` starts a webserver, a daemon and a code server, and the code server starts a
process per run. Started in a new session, they all share one process group, so one signal
reaches all of them and nothing outlives its parent command: stopping sends SIGINT to the group
(``dagster dev`` and its children shut down on it), waits for every member, and SIGKILLs what
is left after a grace period. POSIX only.
"""

import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

STOP_GRACE_SECONDS = 20.0  # dagster dev itself waits up to 60 s per child; we do not


def _restore_default_signals() -> None:
    """In the child before exec: a parent started in the background (``&`` from a script)
    passes SIGINT ignored, and ``dagster dev`` maps SIGTERM onto SIGINT's handler, so without
    this it would ignore both."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited and not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) no longer serves anything.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def start_group(command: list[str], **popen_kwargs) -> subprocess.Popen:
    """Start ``command`` as the leader of a new session and process group."""
    return subprocess.Popen(
        command, start_new_session=True, preexec_fn=_restore_default_signals, **popen_kwargs
    )


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``.

    Reads ``/proc`` where there is one: a zombie still counts for ``killpg(pgid, 0)``, and an
    init that does not reap (as in some containers) would make a stopped group look alive.
    """
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to every process of the group; a group already gone is fine."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def wait_group(
    process: subprocess.Popen, timeout: float, hurry: Callable[[], bool] | None = None
) -> bool:
    """Wait until the leader has exited and no process of its group is alive; False when
    ``timeout`` seconds pass first, or as soon as ``hurry()`` is true. Reaps the leader."""
    deadline = time.monotonic() + timeout
    while True:
        process.poll()
        if process.returncode is not None and not group_members(process.pid):
            return True
        if time.monotonic() >= deadline or (hurry is not None and hurry()):
            return False
        time.sleep(0.2)


def stop_group(
    process: subprocess.Popen,
    signum: int = signal.SIGINT,
    grace: float = STOP_GRACE_SECONDS,
    hurry: Callable[[], bool] | None = None,
) -> int:
    """Stop the whole group of ``process``: ``signum`` to every member, then SIGKILL to what is
    still alive after ``grace`` seconds (or once ``hurry()`` is true: a second Ctrl-C). Returns
    the leader's exit code once every member is gone (negative: killed by that signal)."""
    if process.poll() is None or group_members(process.pid):
        signal_group(process.pid, signum)
        if not wait_group(process, grace, hurry):
            signal_group(process.pid, signal.SIGKILL)
            wait_group(process, grace)
    return process.wait()


def listen_error(host: str, port: int) -> OSError | None:
    """Why a server could not listen on ``host:port`` (``errno.EADDRINUSE``: another process
    listens there), or None when it can.

    Binds a socket the way uvicorn does (``SO_REUSEADDR``, so a port in TIME_WAIT is free) and
    closes it again."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as error:  # socket.gaierror: a host name that does not resolve
        return error
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as error:
                return error
    return None


def port_problem(host: str, port: int) -> str | None:
    """``listen_error`` in words, or None when ``host:port`` is free."""
    error = listen_error(host, port)
    if error is None:
        return None
    if error.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use"
    return f"cannot listen on {host}:{port} ({error.strerror or error})"


def free_port_after(host: str, port: int, tries: int = 50) -> int | None:
    """The first port after ``port`` that ``host`` can listen on (a suggestion to print)."""
    for candidate in range(port + 1, min(port + 1 + tries, 65536)):
        if listen_error(host, candidate) is None:
            return candidate
    return None
