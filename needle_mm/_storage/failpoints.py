"""Named failpoints, inert unless ``NEEDLE_FAILPOINTS`` sets a fault plan.

The plan is a comma-separated list of ``name=action`` where ``name`` is a
failpoint from SPEC.md §6 (for example ``commit.after_data_sync``) or
``io.N`` for the N-th mutating I/O call of the process (1-based), or
``pwrite.N`` for its N-th pwrite, and
``action`` is ``kill`` (SIGKILL this process), ``stop`` (SIGSTOP it: a
writer frozen while it holds the lock), ``sigint`` (SIGINT it: a user's
Ctrl-C), ``eio`` / ``enospc`` (raise that
OSError from the call) or, for an ``io.N`` that is a pwrite or a
``pwrite.N``, ``tear``
(write the first half of the data, then SIGKILL: a torn write). The plan is
read once per process.

``NEEDLE_IO_TRACE=<file>`` appends every mutating call on an open database
file (pwrite with its bytes, fsync, ftruncate, fallocate) to ``<file>``, so
``tools/power_loss.py`` can build the disk images a power cut could leave:
anything since the last fsync dropped, kept, torn or reordered.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import time

_plan: dict[str, str] | None = None
_io_calls = 0
_pwrites = 0
_trace = None  # None: not looked up yet; False: tracing is off


def _load() -> dict[str, str]:
    global _plan
    if _plan is None:
        _plan = {}
        for item in filter(None, os.environ.get("NEEDLE_FAILPOINTS", "").split(",")):
            name, _, action = item.partition("=")
            _plan[name.strip()] = action.strip() or "kill"
    return _plan


def _act(action: str, where: str) -> None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
    elif action == "sigint":
        os.kill(os.getpid(), signal.SIGINT)
        # Python runs the handler (raising KeyboardInterrupt) at its next check,
        # which could fall in a finalizer that swallows it (seen once under
        # load): wait here, so it is raised in this frame.
        for _ in range(500):
            time.sleep(0.01)
    elif action == "eio":
        raise OSError(errno.EIO, f"injected EIO at {where}")
    elif action == "enospc":
        raise OSError(errno.ENOSPC, f"injected ENOSPC at {where}")


def hit(name: str) -> None:
    """Mark that execution reached failpoint ``name``."""
    plan = _load()
    if plan and name in plan:
        _act(plan[name], name)


def io_call(kind: str) -> bool:
    """Count one mutating I/O call; the plan may fail it by number.

    Returns True when the caller must tear this write (write half, then call
    :func:`die`)."""
    global _io_calls, _pwrites
    plan = _load()
    if plan:
        _io_calls += 1
        keys = [f"io.{_io_calls}"]
        if kind == "pwrite":
            _pwrites += 1
            keys.append(f"pwrite.{_pwrites}")
        for key in keys:
            if key in plan:
                if plan[key] == "tear" and kind == "pwrite":
                    return True
                _act(plan[key], f"{key} ({kind})")
    return False


def record(op: str, offset: int = 0, length: int = 0, data: bytes | memoryview = b"") -> None:
    """Append one call to the I/O trace, if ``NEEDLE_IO_TRACE`` is set.

    Each entry is a JSON line ``{"op", "offset", "length"}`` followed, for a
    pwrite, by its ``length`` bytes."""
    global _trace
    if _trace is None:
        target = os.environ.get("NEEDLE_IO_TRACE")
        _trace = open(target, "ab") if target else False
    if _trace:
        _trace.write(json.dumps({"op": op, "offset": offset, "length": length}).encode() + b"\n")
        _trace.write(bytes(data))
        _trace.flush()


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def reset_for_tests() -> None:
    """Forget the plan, the call count and the trace (a forked child re-reads the environment)."""
    global _plan, _io_calls, _pwrites, _trace
    _plan, _io_calls, _pwrites, _trace = None, 0, 0, None
