"""Signing private requests (``exchange.signing``), checked against the documentation's
own values (``shared/reference``) and against an EIP-712 digest computed by hand."""

from __future__ import annotations

import pytest

from asterai.exchange.signing import (
    Nonces,
    V1Key,
    V3Key,
    recover_v3,
    sign_v1,
    sign_v3,
    split_signature,
    v1_matches,
)

# the V3 documentation's demonstration wallet (aster-futures-api-v3.md, "Example of POST
# /fapi/v3/order"): for demonstration only, the private key is the signer's
DOC_USER = "0x63DD5aCC6b1aa0f563956C0e534DD30B6dcF7C4e"
DOC_SIGNER = "0x21cF8Ae13Bb72632562c6Fff438652Ba1a151bb0"
DOC_KEY = "0x4fd0a42218f3eae43a6ce26d22544e986139a01e5b34a62db53757ffca81bae1"
# the V1 documentation's HMAC example (aster-futures-api-v1.md, "SIGNED Endpoint Examples")
DOC_API_KEY = "dbefbc809e3e83c283a984c3a1459732ea7db1360ca80c5c2c8867408d28cc83"
DOC_SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
DOC_ORDER = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": 1, "price": 9000,
             "timeInForce": "GTC"}  # fmt: skip


def test_the_documentations_demo_key_is_its_demo_api_wallet_and_a_wrong_pair_is_refused():
    key = V3Key.of(DOC_USER.lower(), DOC_KEY, signer=DOC_SIGNER)
    assert (key.user, key.signer) == (DOC_USER, DOC_SIGNER)  # checksummed
    assert not key.is_main_wallet
    assert DOC_KEY[2:] not in repr(key) and DOC_KEY[2:] not in str(key)
    with pytest.raises(ValueError, match=f"belongs to {DOC_SIGNER}, not to the API wallet"):
        V3Key.of(DOC_USER, DOC_KEY, signer=DOC_USER)
    with pytest.raises(ValueError, match="not a valid secp256k1 private key") as err:
        V3Key.of(DOC_USER, "0x1234")
    assert "1234" not in str(err.value)
    with pytest.raises(ValueError, match="not an Ethereum address"):
        V3Key.of("0xnot-an-address", DOC_KEY)
    assert V3Key.of(DOC_SIGNER, DOC_KEY).is_main_wallet  # signing with the user's own key


def test_a_v3_signature_recovers_its_api_wallet_and_any_change_breaks_it():
    key = V3Key.of(DOC_USER, DOC_KEY)
    total = sign_v3({**DOC_ORDER, "reduceOnly": False, "price": None}, key, 1748310859508867)
    signed, signature = split_signature(total)
    assert signed == (
        "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&timeInForce=GTC&reduceOnly=false"
        f"&nonce=1748310859508867&user={DOC_USER}&signer={DOC_SIGNER}"
    )
    assert signature.startswith("0x") and len(signature) == 2 + 130
    assert recover_v3(signed, signature) == DOC_SIGNER
    assert recover_v3(signed.replace("quantity=1", "quantity=2"), signature) != DOC_SIGNER
    assert recover_v3(signed, signature[2:]) == DOC_SIGNER  # without its 0x
    assert recover_v3(signed, "0x1234") is None and recover_v3(signed, "zz" * 65) is None
    assert split_signature(f"{signed}&signature={signature}&extra=1") is None  # not last
    assert split_signature(signed) is None
    with pytest.raises(ValueError, match="nonce"):
        sign_v3({"nonce": 1}, key, 2)


def test_the_v3_digest_is_eip712_as_computed_by_hand():
    """The typed data's hash, built from the EIP-712 rules with keccak alone, is what the
    signature signs: the domain and the one-field ``Message`` type are the documented
    ones, not whatever ``encode_typed_data`` might infer."""
    from eth_hash.auto import keccak
    from eth_keys import keys

    def word(n: int) -> bytes:
        return n.to_bytes(32, "big")

    domain_type = keccak(
        b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    )
    domain = keccak(domain_type + keccak(b"AsterSignTransaction") + keccak(b"1") + word(1666)
                    + bytes(32))  # fmt: skip
    key = V3Key.of(DOC_USER, DOC_KEY)
    signed, signature = split_signature(sign_v3({"symbol": "ASTERUSDT"}, key, 7))
    struct = keccak(keccak(b"Message(string msg)") + keccak(signed.encode()))
    digest = keccak(b"\x19\x01" + domain + struct)
    raw = bytes.fromhex(signature[2:])
    sig = keys.Signature(vrs=(raw[64] - 27, int.from_bytes(raw[:32]), int.from_bytes(raw[32:64])))
    assert sig.recover_public_key_from_msg_hash(digest).to_checksum_address() == DOC_SIGNER


def test_v1_signatures_are_the_documentations_examples():
    key = V1Key(DOC_API_KEY, DOC_SECRET)
    assert DOC_SECRET not in repr(key)
    total = sign_v1(DOC_ORDER, key, 1591702613943, recv_window_ms=5000)
    # the documentation's order of parameters: timeInForce after price here
    query = ("symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
             "&recvWindow=5000&timestamp=1591702613943")  # fmt: skip
    assert (
        total
        == f"{query}&signature=3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"
    )
    assert v1_matches(
        DOC_SECRET, query, "3C661234138461FCC7A7D8746C6558C9842D4E10870D2ECBEDF7777CAD694AF9"
    )
    # Example 3: the query string and the body concatenated without an "&"
    mixed = ("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC"
             "quantity=1&price=9000&recvWindow=5000&timestamp=1591702613943")  # fmt: skip
    assert not v1_matches(
        DOC_SECRET, mixed, "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"
    )
    assert not v1_matches("another secret", query, total.rsplit("=", 1)[1])


def test_nonces_never_repeat_even_when_the_clock_stands_still_or_steps_back():
    ticks = iter([100, 100, 100, 90, 200])
    nonces = Nonces(lambda: next(ticks))
    assert [nonces() for _ in range(5)] == [100, 101, 102, 103, 200]
