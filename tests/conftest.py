"""Shared pytest fixtures.

* ``anvil``: one anvil node per test session (npm ``@foundry-rs/anvil-linux-amd64``), on a free
  loopback port, with the project's flags ``gridshare.chain.config.ANVIL_ARGS`` (Cancun,
  automine plus 1 s interval blocks); stopped at the end. Missing binary: the test skips
  locally and FAILS in CI (``CI`` set in the environment). ``GRIDSHARE_ANVIL`` may point to
  another anvil binary.
* ``chain``: a connected ``Chain`` (chain.client), parametrized on the embedded chain and anvil
  (the anvil case carries the ``anvil`` marker). Same code path as a Besu RPC node.
* ``embedded_chain``: a fresh embedded chain only.
* ``require_tool``: find an executable; skip locally, fail in CI when it is missing.
* ``unused_tcp_port``: a loopback port with nothing listening.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from gridshare.chain.config import ANVIL_ARGS

REPO_ROOT = Path(__file__).resolve().parent.parent
ANVIL_CANDIDATES = (
    REPO_ROOT / "node_modules" / ".bin" / "anvil",
    REPO_ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil",
)
ANVIL_START_TIMEOUT_S = 30.0
ANVIL_START_ATTEMPTS = 3


def find_anvil() -> Path | None:
    """The anvil binary: ``$GRIDSHARE_ANVIL``, else the npm package in ``node_modules``."""
    override = os.environ.get("GRIDSHARE_ANVIL")
    candidates = [Path(override)] if override else list(ANVIL_CANDIDATES)
    if not override and shutil.which("anvil"):
        candidates.append(Path(shutil.which("anvil")))  # type: ignore[arg-type]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def missing_tool(message: str) -> None:
    """Skip locally, fail in CI: CI installs every tool, so a missing one is a CI bug."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must install it)")
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class AnvilNode:
    """A running anvil process."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, n_chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n_chars:]
        return ""


def _rpc_ready(url: str) -> bool:
    try:
        response = requests.post(
            url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
            timeout=1.0,
        )
        return response.ok and "result" in response.json()
    except (requests.RequestException, ValueError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def start_anvil(binary: Path, log_dir: Path) -> AnvilNode:
    """Start anvil on a free port and wait until it answers JSON-RPC (retries port races)."""
    problems: list[str] = []
    for attempt in range(ANVIL_START_ATTEMPTS):
        port = free_port()
        log_path = log_dir / f"anvil-{port}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [str(binary), "--host", "127.0.0.1", "--port", str(port), *ANVIL_ARGS],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        node = AnvilNode(f"http://127.0.0.1:{port}", port, process, log_path)
        deadline = time.monotonic() + ANVIL_START_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            if _rpc_ready(node.url):
                return node
            time.sleep(0.1)
        _stop(process)
        problems.append(f"attempt {attempt + 1} on port {port}: {node.log_tail(500)!r}")
    raise RuntimeError("anvil did not start:\n" + "\n".join(problems))


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilNode]:
    """One anvil node for the session; killed at the end."""
    binary = find_anvil()
    if binary is None:
        missing_tool("anvil not installed (npm ci installs @foundry-rs/anvil-linux-amd64)")
    log_dir = Path(tempfile.mkdtemp(prefix="gridshare-anvil-"))
    node = start_anvil(binary, log_dir)  # type: ignore[arg-type]
    try:
        yield node
    finally:
        _stop(node.process)
        shutil.rmtree(log_dir, ignore_errors=True)


@pytest.fixture
def require_tool():
    """``require_tool(name)``: the path of executable ``name``; skips locally, fails in CI."""

    def find(name: str) -> str:
        path = shutil.which(name)
        if path is None:
            missing_tool(f"{name} not installed")
        return path  # type: ignore[return-value]

    return find


@pytest.fixture
def unused_tcp_port() -> int:
    """A loopback TCP port with nothing listening on it (a moment ago)."""
    return free_port()


@pytest.fixture
def embedded_chain():
    """A fresh embedded chain."""
    from gridshare.chain.client import connect

    return connect()


@pytest.fixture(params=["embedded", pytest.param("anvil", marks=pytest.mark.anvil)])
def chain(request):
    """A connected chain: a fresh embedded one, or a new connection to the session's anvil."""
    from gridshare.chain.client import connect
    from gridshare.chain.config import ChainConfig

    if request.param == "embedded":
        return connect()
    node = request.getfixturevalue("anvil")
    return connect(ChainConfig(chain=node.url, receipt_timeout_s=20.0))
