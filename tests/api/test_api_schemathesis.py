"""Schemathesis against the served OpenAPI schema (embedded chain): no input gives a 5xx.

Every operation gets ``MAX_EXAMPLES`` property-based requests generated from the schema (valid
and, where the schema allows, edge values: uint64 extremes, malformed hex, odd headers); every
built-in check runs on each answer: below 500, conforming to the documented responses (status
code, content type, body schema), and "schema-valid data is accepted" with the statuses of the
refusals no schema can express (``REFUSALS_OF_VALID_DATA``): a random signature (401 for a
read, 422 for an order), an unknown prosumer or another member (403), an unknown order or
device (404), a nonce or interval that is not the next/open one (409), a range the other way
round or a deadline before its interval (422).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig

from gridshare.api import create_app
from gridshare.api.app import ApiSettings

from .api_helpers import write_bands

MAX_EXAMPLES = 200
REFUSALS_OF_VALID_DATA = ["2xx", "401", "403", "404", "409", "422"]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory, api_market):
    chain, deployment = api_market
    # generous rate limits: the generated requests come from one client as fast as it can
    app = create_app(chain, deployment, db_path=tmp_path_factory.mktemp("st") / "o.sqlite",
                     relay=False, api_settings=ApiSettings(rate_per_ip_s=1e6, burst_per_ip=10**6,
                                                           rate_per_address_s=1e6,
                                                           burst_per_address=10**6))
    # one band on-chain so the audit reads have something to decode
    interval = int(chain.w3.eth.get_block("latest")["timestamp"]) // 900 + 1
    write_bands(chain, app.state.api.mc.capacity, interval,
                {deployment.battery_device_id: (-10, 10)})
    config = SchemathesisConfig.from_dict({"checks": {"positive_data_acceptance": {
        "expected-statuses": REFUSALS_OF_VALID_DATA}}})
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


# schemathesis' own pytest integration (``from_fixture``) reads a private pytest attribute gone
# in pytest 9; the operations' Hypothesis strategies are driven directly instead.
OPERATIONS = [
    ("POST", "/v1/orders"), ("GET", "/v1/orders/schema"), ("GET", "/v1/orders/{order_hash}"),
    ("GET", "/v1/members/{address}/orders"), ("GET", "/v1/intervals/{interval}"),
    ("GET", "/v1/members/{address}/statement"), ("GET", "/v1/bands"),
    ("GET", "/v1/audit/compliance"), ("GET", "/v1/auth/schema"), ("GET", "/healthz"),
]


NO_INPUTS = {"/v1/orders/schema", "/v1/auth/schema", "/healthz"}


def test_every_operation_is_covered(api_schema):
    served = {(r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations()}
    assert served == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_server_errors(api_schema, method, path):
    operation = api_schema[path][method]
    seen: list[int] = []

    @given(case=operation.as_strategy())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        response = case.call()
        seen.append(response.status_code)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)
        case.validate_response(response)  # every check

    check()
    # every operation with inputs really got MAX_EXAMPLES requests (one without inputs: one)
    assert len(seen) == (1 if path in NO_INPUTS else MAX_EXAMPLES), len(seen)
