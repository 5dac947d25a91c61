"""The live account's keys, from the environment only (never a file, an argument, a
log, the journal or a report).

V3 (the default): ``ASTERAI_USER`` (the main wallet's address), ``ASTERAI_SIGNER`` (the
API wallet's address) and ``ASTERAI_SIGNER_KEY`` (the API wallet's private key). A
signing key that is the main wallet's own works, with a warning: an API wallet's key
can be revoked without moving funds. V1 (old keys, no longer issued since March 2026):
``ASTERAI_API_KEY`` and ``ASTERAI_API_SECRET``, only when no V3 variable is set.

A key that is malformed, or that does not belong to the address it is said to sign
for, is refused at start, before any request: ``LiveKeyError`` names the variable,
never its value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from asterai.exchange.signing import V1Key, V3Key

V3_VARIABLES = ("ASTERAI_USER", "ASTERAI_SIGNER", "ASTERAI_SIGNER_KEY")
V1_VARIABLES = ("ASTERAI_API_KEY", "ASTERAI_API_SECRET")


class LiveKeyError(ValueError):
    """The environment holds no usable key (the message names the variables)."""


@dataclass(frozen=True)
class LiveKeys:
    key: V3Key | V1Key
    warnings: tuple[str, ...] = ()

    @property
    def account(self) -> str:
        """What the account is known by in the journal: the user's address (V3) or the
        V1 key's first 8 characters (never the secret)."""
        if isinstance(self.key, V3Key):
            return self.key.user
        return f"v1:{self.key.api_key[:8]}"


def from_environment(env: Mapping[str, str] | None = None) -> LiveKeys:
    """The keys the environment holds, checked; ``LiveKeyError`` otherwise."""
    env = os.environ if env is None else env
    given = {name: env.get(name, "").strip() for name in V3_VARIABLES + V1_VARIABLES}
    if any(given[n] for n in V3_VARIABLES):
        missing = [n for n in V3_VARIABLES if not given[n]]
        if missing:
            raise LiveKeyError(
                f"V3 keys need {', '.join(V3_VARIABLES)}; missing: {', '.join(missing)}"
            )
        try:
            key = V3Key.of(given["ASTERAI_USER"], given["ASTERAI_SIGNER_KEY"],
                           signer=given["ASTERAI_SIGNER"])  # fmt: skip
        except ValueError as err:
            raise LiveKeyError(
                f"ASTERAI_USER / ASTERAI_SIGNER / ASTERAI_SIGNER_KEY: {err}"
            ) from None
        warnings = ()
        if key.is_main_wallet:
            warnings = ("the signing key is the main wallet's own: an API wallet's key "
                        "(asterdex.com, API wallet) can be revoked without moving funds",)  # fmt: skip
        return LiveKeys(key, warnings)
    if given["ASTERAI_API_KEY"] or given["ASTERAI_API_SECRET"]:
        missing = [n for n in V1_VARIABLES if not given[n]]
        if missing:
            raise LiveKeyError(
                f"V1 keys need {', '.join(V1_VARIABLES)}; missing: {', '.join(missing)}"
            )
        return LiveKeys(V1Key(given["ASTERAI_API_KEY"], given["ASTERAI_API_SECRET"]),
                        ("V1 keys: Aster stopped issuing them in March 2026; V3 is the default",))  # fmt: skip
    raise LiveKeyError(
        "no keys in the environment: set ASTERAI_USER, ASTERAI_SIGNER and "
        "ASTERAI_SIGNER_KEY (V3), or ASTERAI_API_KEY and ASTERAI_API_SECRET (V1)"
    )
