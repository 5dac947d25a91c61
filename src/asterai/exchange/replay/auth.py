"""Who may act on which account: the stand-in exchange's side of signed requests.

Checked as the documentation says Aster checks them (``exchange.signing`` makes the
signatures, this module verifies them):

- **V3**: ``user``, ``signer``, ``nonce`` and ``signature`` (last) are mandatory
  (-1102). The signer recovered from the signature over what precedes
  ``&signature=`` must be the ``signer`` sent (-1022), and an API wallet registered
  for ``user``, or the user's own wallet (-2015). The nonce (microseconds) must lie
  within 10 s of the clock (-1021) and not be among the user's last 100 (-4225
  "Nonce Expired"; so is one below all of a full list).
- **V1**: ``X-MBX-APIKEY`` names a key (-2014 when absent, -2015 when unknown); the
  signature is the HMAC-SHA256 of the query string and the body (-1022); ``timestamp``
  within ``recvWindow`` (default 5,000 ms, at most 60,000) before the clock and less
  than a second after it (-1021).

Freshness is measured against this machine's clock, not the replay's: the replay plays
a recording (at any speed, from any date), while a nonce or a timestamp guards against
the network, and a client signs with its own clock as it would live.
"""

from __future__ import annotations

import bisect
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from eth_account import Account as EthAccount

from asterai.exchange.replay.errors import ApiError
from asterai.exchange.signing import (
    V1_AHEAD_MS,
    V1_MAX_RECV_WINDOW_MS,
    V1_RECV_WINDOW_MS,
    V3_NONCE_WINDOW_US,
    V3_NONCES_KEPT,
    recover_v3,
    split_signature,
    v1_matches,
)


@dataclass(frozen=True)
class Wallet:
    """A throwaway key pair made for the replay (printed once for the user)."""

    address: str
    private_key: str = field(repr=False)

    @classmethod
    def new(cls) -> Wallet:
        acct = EthAccount.create(secrets.token_hex(32))
        return cls(acct.address, "0x" + bytes(acct.key).hex())


@dataclass(frozen=True)
class Credentials:
    """One simulated account's keys: the user's wallet, its API wallet (V3) and a V1
    key and secret."""

    user: Wallet
    api_wallet: Wallet
    api_key: str
    api_secret: str = field(repr=False)


class Auth:
    """The registry of users, API wallets and V1 keys, and each user's recent nonces."""

    def __init__(self, wall_ms: Callable[[], int] | None = None) -> None:
        self._wall_ms = wall_ms or (lambda: int(time.time() * 1000))
        self.api_wallets: dict[str, set[str]] = {}  # user -> API wallets
        self.v1_keys: dict[str, tuple[str, str]] = {}  # api key -> (secret, user)
        self._nonces: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def register(self, user: str, api_wallet: str | None = None,
                 api_key: str | None = None, api_secret: str | None = None) -> None:  # fmt: skip
        with self._lock:
            wallets = self.api_wallets.setdefault(user, set())
            if api_wallet is not None:
                wallets.add(api_wallet)
            if api_key is not None and api_secret is not None:
                self.v1_keys[api_key] = (api_secret, user)

    def create(self) -> Credentials:
        """A new user with an API wallet and a V1 key, registered."""
        user, api = Wallet.new(), Wallet.new()
        creds = Credentials(user, api, secrets.token_hex(32), secrets.token_hex(32))
        self.register(user.address, api.address, creds.api_key, creds.api_secret)
        return creds

    # -- checks ---------------------------------------------------------------------

    def user_v3(self, total: str, params: dict[str, str]) -> str:
        """The user a V3 request (``total``: its query string and body as sent) acts
        for, once its signature and nonce pass; ApiError otherwise."""
        for name in ("user", "signer", "nonce", "signature"):
            if not params.get(name):
                raise ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was "
                             "empty/null, or malformed.")  # fmt: skip
        split = split_signature(total)
        if split is None:
            raise ApiError(400, -1022, "Signature for this request is not valid.")
        signed, signature = split
        recovered = recover_v3(signed, signature)
        if recovered is None or recovered.lower() != params["signer"].lower():
            raise ApiError(400, -1022, "Signature for this request is not valid.")
        with self._lock:  # accounts may be opened meanwhile
            users = {u: {w.lower() for w in ws} for u, ws in self.api_wallets.items()}
        user = next((u for u in users if u.lower() == params["user"].lower()), None)
        if user is None or (
            recovered.lower() != user.lower() and recovered.lower() not in users[user]
        ):
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        try:
            nonce = int(params["nonce"])
        except ValueError:
            raise ApiError(400, -1102, "Mandatory parameter 'nonce' was malformed.") from None
        self._take_nonce(user, nonce)
        return user

    def _take_nonce(self, user: str, nonce: int) -> None:
        now_us = self._wall_ms() * 1000
        if abs(nonce - now_us) > V3_NONCE_WINDOW_US:
            raise ApiError(400, -1021, "Nonce is outside of the 10 s window of the server's time.")
        with self._lock:
            kept = self._nonces.setdefault(user, [])
            at = bisect.bisect_left(kept, nonce)
            if at < len(kept) and kept[at] == nonce:
                raise ApiError(400, -4225, "Nonce Expired")  # a duplicate: used already
            if len(kept) >= V3_NONCES_KEPT and nonce < kept[0]:
                raise ApiError(400, -4225, "Nonce Expired")
            kept.insert(at, nonce)
            if len(kept) > V3_NONCES_KEPT:
                del kept[0]

    def user_v1(self, total: str, params: dict[str, str], api_key: str | None) -> str:
        """The user a V1 request acts for, once its key, signature and timestamp pass."""
        if not api_key:
            raise ApiError(401, -2014, "API-key format invalid.")
        entry = self.v1_keys.get(api_key)
        if entry is None:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        secret, user = entry
        split = split_signature(total)
        if split is None or not v1_matches(secret, split[0], split[1]):
            raise ApiError(400, -1022, "Signature for this request is not valid.")
        try:
            stamp = int(params.get("timestamp", ""))
        except ValueError:
            raise ApiError(400, -1102, "Mandatory parameter 'timestamp' was not sent, was "
                         "empty/null, or malformed.") from None  # fmt: skip
        try:
            window = int(params.get("recvWindow", V1_RECV_WINDOW_MS))
        except ValueError:
            window = -1  # refused below, by name
        if window > V1_MAX_RECV_WINDOW_MS or window <= 0:
            raise ApiError(400, -1130, "Invalid data sent for a parameter: 'recvWindow'.")
        now = self._wall_ms()
        if stamp >= now + V1_AHEAD_MS:
            raise ApiError(
                400, -1021, "Timestamp for this request was 1000ms ahead of the server's time."
            )
        if now - stamp > window:
            raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        return user

    def user_of_key(self, api_key: str | None) -> str:
        """The user of a V1 key (``USER_STREAM`` endpoints need the key alone)."""
        if not api_key:
            raise ApiError(401, -2014, "API-key format invalid.")
        entry = self.v1_keys.get(api_key)
        if entry is None:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        return entry[1]
