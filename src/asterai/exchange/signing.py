"""Signing Aster's private requests, and checking a signature as the exchange does.

Two schemes (``shared/reference``):

* **V3** (``/fapi/v3/...``, the current one): an API wallet (the *signer*) signs for
  the user's wallet. The request's parameters, then ``nonce`` (microseconds),
  ``user`` and ``signer``, are URL-encoded in that order; that string is the ``msg``
  of an EIP-712 message (domain ``AsterSignTransaction``, version 1, chain id 1666,
  the zero verifying contract; one field ``msg: string``), signed with the API
  wallet's key; ``signature`` goes last. The exchange recovers the signer from the
  signature over what precedes ``&signature=``, checks it is an API wallet of
  ``user``, and that the nonce is within 10 s of its clock and not among the user's
  last 100.
* **V1** (``/fapi/v1/...``): ``X-MBX-APIKEY`` names the key; ``signature`` is the
  HMAC-SHA256 (hex) of the query string concatenated with the body, under the
  secret; ``timestamp`` (ms) must lie within ``recvWindow`` (default 5000) before the
  exchange's clock and less than a second after it. Aster stopped issuing new V1 keys
  in March 2026: V3 is the default.

EIP-712 hashing and secp256k1 signing are ``eth-account``'s (``encode_typed_data``;
the documentation's example calls ``encode_structured_data``, which eth-account 0.11
removed). Keys are held in objects whose ``repr`` never shows them; they come from
the environment only, and nothing here logs.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data

#: the EIP-712 domain of every V3 signature (the documentation's, verbatim)
V3_DOMAIN: dict[str, Any] = {
    "name": "AsterSignTransaction",
    "version": "1",
    "chainId": 1666,
    "verifyingContract": "0x0000000000000000000000000000000000000000",
}
_V3_TYPES = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "Message": [{"name": "msg", "type": "string"}],
}
#: how far a V3 nonce may lie from the exchange's clock, microseconds
V3_NONCE_WINDOW_US = 10_000_000
#: the nonces remembered per user (a nonce below all of a full list is expired)
V3_NONCES_KEPT = 100
#: V1: the default and the largest ``recvWindow``, ms; how far ahead a timestamp may be
V1_RECV_WINDOW_MS = 5_000
V1_MAX_RECV_WINDOW_MS = 60_000
V1_AHEAD_MS = 1_000
SIGNATURE = "signature"


def _address(value: str) -> str:
    """A checksummed address; ValueError naming the value's shape when it is not one."""
    from eth_utils import is_address, to_checksum_address

    if not isinstance(value, str) or not is_address(value):
        raise ValueError(f"not an Ethereum address: {value[:6] if value else value!r}...")
    return to_checksum_address(value)


@dataclass(frozen=True, slots=True)
class V3Key:
    """A user's wallet and the API wallet that signs for it. ``repr`` hides the key."""

    user: str
    signer: str
    private_key: str = field(repr=False)

    @classmethod
    def of(cls, user: str, private_key: str, signer: str | None = None) -> V3Key:
        """The key checked: ``signer`` (default: the key's own address) must be the
        address of ``private_key``; a bad key is refused before any request."""
        try:
            own = Account.from_key(private_key).address
        except (ValueError, TypeError) as err:
            raise ValueError("the signing key is not a valid secp256k1 private key") from err
        signer = _address(signer) if signer is not None else own
        if signer != own:
            raise ValueError(
                f"the signing key belongs to {own}, not to the API wallet {signer} it is "
                "configured for"
            )
        return cls(_address(user), signer, private_key)

    @property
    def is_main_wallet(self) -> bool:
        """The user signs with the main wallet's own key (works, but an API wallet's key
        can be revoked without moving funds)."""
        return self.user == self.signer


@dataclass(frozen=True, slots=True)
class V1Key:
    """An API key and its secret. ``repr`` hides the secret."""

    api_key: str
    secret: str = field(repr=False)


class Nonces:
    """V3 nonces: the clock's microseconds, strictly increasing even when asked twice in
    the same microsecond or when the clock steps back (never a duplicate)."""

    def __init__(self, clock_us: Callable[[], int] | None = None) -> None:
        self._clock = clock_us or (lambda: time.time_ns() // 1_000)
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            self._last = max(self._clock(), self._last + 1)
            return self._last


def v3_message(msg: str) -> SignableMessage:
    """The EIP-712 message whose ``msg`` is the request's encoded parameters."""
    return encode_typed_data(
        full_message={
            "types": _V3_TYPES,
            "primaryType": "Message",
            "domain": V3_DOMAIN,
            "message": {"msg": msg},
        }
    )


def _pairs(params: dict[str, Any] | Iterable[tuple[str, Any]]) -> list[tuple[str, str]]:
    items = params.items() if isinstance(params, dict) else params
    out = []
    for k, v in items:
        if v is None:
            continue
        if isinstance(v, bool):
            v = "true" if v else "false"
        out.append((str(k), str(v)))
    return out


def sign_v3(params: dict[str, Any], key: V3Key, nonce: int) -> str:
    """The request's encoded parameters, signed: ``params`` (None left out, booleans
    as ``true``/``false``), ``nonce``, ``user``, ``signer``, then ``signature``."""
    pairs = _pairs(params)
    taken = {"nonce", "user", "signer", SIGNATURE} & {k for k, _ in pairs}
    if taken:
        raise ValueError(f"parameters the signature adds itself: {', '.join(sorted(taken))}")
    msg = urlencode([*pairs, ("nonce", str(nonce)), ("user", key.user), ("signer", key.signer)])
    return f"{msg}&{SIGNATURE}={sign_v3_message(msg, key)}"


def sign_v3_message(msg: str, key: V3Key) -> str:
    """The signature (``0x`` and 130 hex digits) of ``msg``, the encoded parameters as
    they will be sent. ECDSA here is deterministic (RFC 6979): the same message and key
    always sign the same."""
    signed = Account.sign_message(v3_message(msg), private_key=key.private_key)
    return f"0x{bytes(signed.signature).hex()}"


def split_signature(total: str) -> tuple[str, str] | None:
    """``total`` (the query string and body as sent) cut into what was signed and the
    signature, which must come last; None when there is none."""
    head, sep, sig = total.rpartition(f"&{SIGNATURE}=")
    if not sep:
        if total.startswith(f"{SIGNATURE}="):
            return "", total[len(SIGNATURE) + 1 :]
        return None
    if "&" in sig:
        return None  # not the last parameter
    return head, sig


def recover_v3(signed: str, signature: str) -> str | None:
    """The address that made ``signature`` over ``signed``; None when the signature is
    malformed (not 65 bytes of hex)."""
    text = signature.strip()
    text = text[2:] if text[:2].lower() == "0x" else text
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    if len(raw) != 65:
        return None
    try:
        return Account.recover_message(v3_message(signed), signature=raw)
    except Exception:  # noqa: BLE001 - any failure to recover is a bad signature
        return None


def v1_signature(secret: str, total: str) -> str:
    """HMAC-SHA256 (hex) of ``total`` (query string + body) under ``secret``."""
    return hmac.new(secret.encode(), total.encode(), hashlib.sha256).hexdigest()


def sign_v1(
    params: dict[str, Any], key: V1Key, timestamp_ms: int, recv_window_ms: int | None = None
) -> str:
    """The request's encoded parameters with ``timestamp`` (and ``recvWindow``), signed
    with the secret; ``signature`` last."""
    pairs = _pairs(params)
    if recv_window_ms is not None:
        pairs.append(("recvWindow", str(int(recv_window_ms))))
    pairs.append(("timestamp", str(int(timestamp_ms))))
    query = urlencode(pairs)
    return f"{query}&{SIGNATURE}={v1_signature(key.secret, query)}"


def v1_matches(secret: str, total: str, signature: str) -> bool:
    """Whether ``signature`` (not case sensitive) is ``total``'s under ``secret``."""
    given = signature.strip().lower().encode("utf-8", "replace")  # any text: no error
    return hmac.compare_digest(v1_signature(secret, total).encode(), given)
