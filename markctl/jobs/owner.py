"""Which process owns a cycle in progress, and whether it still lives.

Every ``started`` record names its owner: host, process id and the process's start time (from
``/proc`` on Linux), so a pid reused by another program is not mistaken for the owner. Recovery
turns a ``started`` item into ``unknown`` only when its owner is certainly gone: same host, and
the process is not running (or is another process with the same pid). An item started on another
host is left for a supervisor.
"""

from __future__ import annotations

import os
import socket
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["owner_is_gone", "this_process"]


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) counts after the parenthesised command name, which may hold spaces.
    return stat.rsplit(")", 1)[1].split()[19]


@cache
def this_process() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _start_time(pid)}


def owner_is_gone(owner: dict[str, Any] | None) -> bool:
    """True when ``owner`` (from a started record) is certainly no longer running."""
    if not owner or owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, owned by someone else
    start = owner.get("start")
    return start is not None and _start_time(pid) not in (None, start)
