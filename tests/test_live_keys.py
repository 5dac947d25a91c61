"""The live account's keys come from the environment only, checked before any request;
errors name the variables, never the values."""

from __future__ import annotations

import pytest

from asterai.exchange.signing import V1Key, V3Key
from asterai.live.keys import LiveKeyError, from_environment

# the V3 documentation's demonstration wallet (its private key is the signer's)
USER = "0x63DD5aCC6b1aa0f563956C0e534DD30B6dcF7C4e"
SIGNER = "0x21cF8Ae13Bb72632562c6Fff438652Ba1a151bb0"
KEY = "0x4fd0a42218f3eae43a6ce26d22544e986139a01e5b34a62db53757ffca81bae1"


def test_v3_keys_are_checked_and_the_main_wallets_own_key_warned_of():
    keys = from_environment(
        {"ASTERAI_USER": USER, "ASTERAI_SIGNER": SIGNER, "ASTERAI_SIGNER_KEY": KEY}
    )
    assert isinstance(keys.key, V3Key) and keys.account == USER and keys.warnings == ()
    own = from_environment(
        {"ASTERAI_USER": SIGNER, "ASTERAI_SIGNER": SIGNER, "ASTERAI_SIGNER_KEY": KEY}
    )
    assert own.warnings and "main wallet's own" in own.warnings[0]


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({}, "no keys in the environment"),
        ({"ASTERAI_USER": USER, "ASTERAI_SIGNER_KEY": KEY}, "missing: ASTERAI_SIGNER"),
        ({"ASTERAI_USER": USER, "ASTERAI_SIGNER": USER, "ASTERAI_SIGNER_KEY": KEY}, "belongs to"),
        ({"ASTERAI_USER": USER, "ASTERAI_SIGNER": SIGNER, "ASTERAI_SIGNER_KEY": "0xdeadbeef"},
         "not a valid secp256k1 private key"),
        ({"ASTERAI_API_KEY": "kv-7Hq2-secretish"}, "missing: ASTERAI_API_SECRET"),
    ],
)  # fmt: skip
def test_a_bad_key_is_refused_naming_the_variable_never_the_value(env, says):
    with pytest.raises(LiveKeyError, match=says) as err:
        from_environment(env)
    for value in env.values():
        if value not in (USER, SIGNER):
            assert value not in str(err.value)


def test_v1_keys_when_no_v3_variable_is_set():
    keys = from_environment({"ASTERAI_API_KEY": "abcdefgh12345", "ASTERAI_API_SECRET": "s3cr3t"})
    assert isinstance(keys.key, V1Key) and keys.account == "v1:abcdefgh"
    assert "s3cr3t" not in repr(keys) and "V1 keys" in keys.warnings[0]
