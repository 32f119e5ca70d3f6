"""Member-private reads: a request signed with the member's key (EIP-712), with an expiry.

A member's orders and statement are private (``GET /v1/orders/{order_hash}``,
``GET /v1/members/{address}/orders``, ``GET /v1/members/{address}/statement``); public
aggregates (intervals, bands, the audit, health) stay open. A private read carries three
headers, no password and no session:

    X-Gridshare-Member: 0x...          the member's address
    X-Gridshare-Expires: 1795417630    unix s; in the future, at most ``max_lifetime_s`` ahead
    X-Gridshare-Signature: 0x<65 B>    EIP-712 signature of ReadAccess{member, expires}

signed (``eth_signTypedData_v4``) with the ``types`` and ``domain`` of ``GET /v1/auth/schema``:
``ReadAccess(address member,uint64 expires)`` in the domain ``gridshare-read`` / ``1`` / the
chain id / the market contract (so a read signature is never an order signature, nor valid on
another deployment). The same signed headers may be reused until they expire (a bearer
credential of bounded life: keep it to TLS). Errors: 401 ``auth_required`` (headers missing),
401 ``auth_invalid`` (malformed, expired, too long-lived, or signed by another key than the
member header), 403 ``not_your_data`` (a valid proof of another member).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from eth_account import Account
from eth_utils import keccak, to_checksum_address
from fastapi import APIRouter, Header, Request

from market.orders import EIP712_TYPES, MarketDomain

from .errors import ApiError
from .schemas import AuthSchema

READ_DOMAIN_NAME = "gridshare-read"
READ_TYPE = "ReadAccess(address member,uint64 expires)"
READ_TYPEHASH = keccak(text=READ_TYPE)
READ_TYPES: dict[str, list[dict[str, str]]] = {
    "EIP712Domain": EIP712_TYPES["EIP712Domain"],
    "ReadAccess": [{"name": "member", "type": "address"}, {"name": "expires", "type": "uint64"}],
}
HEADER_MEMBER = "X-Gridshare-Member"
HEADER_EXPIRES = "X-Gridshare-Expires"
HEADER_SIGNATURE = "X-Gridshare-Signature"
AUTH_HEADERS = (HEADER_MEMBER, HEADER_EXPIRES, HEADER_SIGNATURE)
#: Longest accepted lifetime of a read signature, seconds.
DEFAULT_MAX_LIFETIME_S = 3600

router = APIRouter(tags=["auth"])


@dataclass(frozen=True)
class ReadVerifier:
    """Checks read proofs for one market deployment; times in unix s."""

    domain: MarketDomain
    max_lifetime_s: int = DEFAULT_MAX_LIFETIME_S

    @classmethod
    def for_market(cls, market: MarketDomain, max_lifetime_s: int) -> ReadVerifier:
        return cls(MarketDomain(market.chain_id, market.verifying_contract,
                                name=READ_DOMAIN_NAME), max_lifetime_s)

    def digest(self, member: str, expires: int) -> bytes:
        """The EIP-712 digest of ``ReadAccess{member, expires}``."""
        words = (READ_TYPEHASH + bytes.fromhex(to_checksum_address(member)[2:]).rjust(32, b"\0")
                 + int(expires).to_bytes(32, "big"))
        return keccak(b"\x19\x01" + self.domain.separator + keccak(words))

    def verify(self, member: str, expires: int, signature: bytes, now_unix_s: float) -> str:
        """The member's checksum address if the proof holds, else ApiError 401."""
        if expires < now_unix_s:
            raise _invalid(f"the read signature expired at {expires} (now {int(now_unix_s)})",
                           HEADER_EXPIRES)
        if expires > now_unix_s + self.max_lifetime_s:
            raise _invalid(f"{HEADER_EXPIRES} {expires} is more than {self.max_lifetime_s} s "
                           "ahead: sign a shorter-lived read", HEADER_EXPIRES)
        try:
            signer = Account._recover_hash(self.digest(member, expires), signature=signature)
        except Exception as exc:  # eth_keys raises several types for a malformed signature
            raise _invalid(f"the read signature cannot be recovered: {exc}",
                           HEADER_SIGNATURE) from None
        if signer != to_checksum_address(member):
            raise _invalid(f"the read signature is by {signer}, not by {member}",
                           HEADER_SIGNATURE)
        return signer


def _invalid(message: str, field: str) -> ApiError:
    return ApiError(401, "auth_invalid", message, field)


MemberHeader = Annotated[str | None, Header(alias=HEADER_MEMBER, pattern=r"^0x[0-9a-fA-F]{40}$",
                                            description="the member's address")]
ExpiresHeader = Annotated[int | None, Header(alias=HEADER_EXPIRES, ge=0, le=2**64 - 1,
                                             description="unix s the signature expires")]
SignatureHeader = Annotated[str | None, Header(alias=HEADER_SIGNATURE,
                                               pattern=r"^0x[0-9a-fA-F]{130}$",
                                               description="EIP-712 ReadAccess signature")]


def signed_member(request: Request, member: MemberHeader = None, expires: ExpiresHeader = None,
                  signature: SignatureHeader = None) -> str:
    """FastAPI dependency: the member a request proves to be (see module docstring)."""
    if member is None or expires is None or signature is None:
        raise ApiError(401, "auth_required",
                       f"a member's data needs the headers {', '.join(AUTH_HEADERS)} (an "
                       "EIP-712 ReadAccess signature, see GET /v1/auth/schema)", HEADER_MEMBER)
    api = request.app.state.api
    proven = api.reads.verify(member, expires, bytes.fromhex(signature[2:]), api.gateway.clock())
    api.limit_address(proven)
    return proven


def require_owner(member: str, owner: str) -> None:
    """403 unless the proven ``member`` is ``owner``."""
    if to_checksum_address(owner) != member:
        raise ApiError(403, "not_your_data",
                       f"the request is signed by {member}; only {to_checksum_address(owner)} "
                       "may read this", HEADER_MEMBER)


def schema_of(verifier: ReadVerifier) -> dict[str, Any]:
    """What ``GET /v1/auth/schema`` answers."""
    return {"primary_type": "ReadAccess", "types": READ_TYPES,
            "domain": verifier.domain.as_dict(), "read_type": READ_TYPE,
            "headers": {"member": HEADER_MEMBER, "expires": HEADER_EXPIRES,
                        "signature": HEADER_SIGNATURE},
            "max_lifetime_s": verifier.max_lifetime_s}


@router.get("/v1/auth/schema", response_model=AuthSchema,
            summary="How to sign a member-private read")
def auth_schema(request: Request) -> AuthSchema:
    """EIP-712 ``types`` and ``domain`` of ``ReadAccess{member, expires}``, the header names
    and the longest lifetime a read signature may have."""
    return AuthSchema(**schema_of(request.app.state.api.reads))
