"""One relay per order store and per sender key, and a relay that does not outlive its server.

Two relays on one store would send every order twice; two on one key would fight over its
nonces. :class:`RelayLock` takes an exclusive, non-blocking ``flock`` on

* ``<store>.relay.lock`` next to the SQLite file (none for ``":memory:"``), and
* ``gridshare-relay-<chain id>-<genesis>-<address>.lock`` in ``$XDG_RUNTIME_DIR`` (else the
  temporary directory) for the key: one relay per key *on this machine* (a key must not be
  used by relays on two machines; nothing here can see that),

and writes its process id into each. The kernel drops the locks when the process ends, however
it ends, so a crashed relay never blocks the next one. A second relay is refused with
:class:`RelayLockedError` naming the process that holds the lock.

:func:`exit_with_parent` makes a child process (``python -m market.gateway.relay``) get SIGTERM
when its parent dies (Linux ``PR_SET_PDEATHSIG``); the relay loop also compares
``os.getppid()`` with the parent it was started by.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1


class RelayLockedError(RuntimeError):
    """Another relay already relays this store or with this key."""


def key_lock_dir() -> Path:
    """Where key locks live: ``$XDG_RUNTIME_DIR``, else the temporary directory."""
    return Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())


class RelayLock:
    """The locks of one relay: its store (``store_path``) and its key (``key_id``: chain id,
    genesis hash prefix and sender address; None: no key lock)."""

    def __init__(self, store_path: str, key_id: str | None) -> None:
        self.targets: list[tuple[Path, str]] = []
        if store_path != ":memory:":
            self.targets.append((Path(f"{store_path}.relay.lock"),
                                 f"the order store {store_path}"))
        if key_id is not None:
            self.targets.append((key_lock_dir() / f"gridshare-relay-{key_id}.lock",
                                 f"with the key {key_id.rsplit('-', 1)[-1]}"))
        self._files: list[IO[str]] = []

    def acquire(self) -> None:
        """Take every lock or none; RelayLockedError names the holder."""
        try:
            for path, what in self.targets:
                self._files.append(_lock(path, what))
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        for handle in self._files:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        self._files = []


def _lock(path: Path, what: str) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 (held for the relay's lifetime)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RelayLockedError(
            f"another relay (process {holder}) already relays {what} (lock {path}); one relay "
            "per order store and per key: stop that one first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def exit_with_parent() -> None:
    """Ask the kernel to send this process SIGTERM when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
