"""The embedded chain and market deployment the REST API test modules share (one deployment
costs about 15 s); modules use disjoint prosumers (``api_helpers.Signer(first=...)``)."""

from __future__ import annotations

import pytest

from gridshare.chain.client import connect

from .api_helpers import deploy_market


@pytest.fixture(scope="session")
def api_market():
    """(chain, deployment) on a fresh embedded chain."""
    chain = connect()
    return chain, deploy_market(chain)
