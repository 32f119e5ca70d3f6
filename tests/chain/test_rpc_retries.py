"""A node that is down: web3's retries (``http_provider``), then ``ChainUnavailable`` in time.

A tiny local HTTP server counts the requests it gets and either drops every connection without
an answer ("refuse") or answers nothing until long after the request timeout ("silent").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from web3.types import RPCEndpoint

from gridshare.chain.client import connect, http_provider
from gridshare.chain.config import ChainConfig
from gridshare.chain.errors import ChainUnavailable


class _DownNode(BaseHTTPRequestHandler):
    """Counts POSTs; "refuse" closes the connection at once, "silent" never answers in time."""

    mode = "refuse"
    seen = 0
    release: threading.Event

    def do_POST(self) -> None:
        cls = type(self)
        cls.seen += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        if cls.mode == "silent":
            cls.release.wait(30.0)
        self.close_connection = True  # no status line: the client sees a dropped connection

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def down_node() -> Iterator[tuple[str, type[_DownNode]]]:
    handler = type("Handler", (_DownNode,), {"seen": 0, "mode": "refuse",
                                             "release": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_refusing_node_is_unavailable_after_the_configured_retries(down_node) -> None:
    url, node = down_node
    config = ChainConfig(chain=url, poa=False, retries=3, backoff_s=0.1, request_timeout_s=2.0)
    started = time.monotonic()
    with pytest.raises(ChainUnavailable) as info:
        connect(config)
    elapsed_s = time.monotonic() - started
    assert node.seen == 4 and info.value.attempts == 4
    assert isinstance(info.value.cause, requests.ConnectionError)
    assert url in str(info.value)
    backoff_total_s = 0.1 + 0.2 + 0.4
    assert backoff_total_s <= elapsed_s < backoff_total_s + 1.5


def test_silent_node_times_out_each_attempt_then_is_unavailable(down_node) -> None:
    url, node = down_node
    node.mode = "silent"
    config = ChainConfig(chain=url, poa=False, retries=1, backoff_s=0.05, request_timeout_s=0.4)
    started = time.monotonic()
    with pytest.raises(ChainUnavailable) as info:
        connect(config)
    elapsed_s = time.monotonic() - started
    assert node.seen == 2 and info.value.attempts == 2
    assert isinstance(info.value.cause, requests.Timeout)
    expected_s = 2 * 0.4 + 0.05
    assert expected_s <= elapsed_s < expected_s + 1.5


def test_no_retries_means_one_attempt(down_node) -> None:
    url, node = down_node
    with pytest.raises(ChainUnavailable) as info:
        connect(ChainConfig(chain=url, poa=False, retries=0, backoff_s=5.0))
    assert node.seen == 1 and info.value.attempts == 1


def test_raw_transactions_are_retried_and_unlisted_methods_sent_once(down_node) -> None:
    """eth_sendRawTransaction is idempotent by hash (web3's allow-list retries it, as the old
    provider did); a method outside the allow-list (anvil_reorg) is sent once."""
    url, node = down_node
    provider = http_provider(ChainConfig(chain=url, retries=2, backoff_s=0.01))
    with pytest.raises(ChainUnavailable) as info:
        provider.make_request(RPCEndpoint("eth_sendRawTransaction"), ["0x00"])
    assert node.seen == 3 and info.value.attempts == 3
    with pytest.raises(ChainUnavailable) as info:
        provider.make_request(RPCEndpoint("anvil_reorg"), [1, []])
    assert node.seen == 4 and info.value.attempts == 1
