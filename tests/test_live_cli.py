"""``asterai live`` refuses to start, with exit 2 and nothing sent or written, without
what money needs: keys in the environment that the exchange accepts, a paper record of
the same export reconciled with the backtest (or the user's explicit override), and,
at the first start against the real exchange, ``--confirm``."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import FAST_EXCHANGE

from asterai.config import load_settings
from asterai.paths import DataPaths

HOUR = 3_600_000
START = int(pd.Timestamp("2025-10-01T03:00:00Z").value // 1_000_000)


def _root(exported_root: Path, tmp: Path) -> Path:
    root = tmp / "root"
    shutil.copytree(exported_root, root)
    return root


def _cli(root: Path, env: dict[str, str], *args: str):
    from click.testing import CliRunner

    from asterai.cli import main

    clean = {k: "" for k in ("ASTERAI_USER", "ASTERAI_SIGNER", "ASTERAI_SIGNER_KEY",
                             "ASTERAI_API_KEY", "ASTERAI_API_SECRET")}  # fmt: skip
    return CliRunner().invoke(main, ["live", "--data-root", str(root), *args], env=clean | env)


def _replay(recording):
    from asterai.exchange.replay import ReplayServer

    return ReplayServer(recording, clock_speed=0, play_from_ms=START + HOUR + 1000,
                        weight_limit=10**9, accounts=1, balance="50")  # fmt: skip


def _env(creds, signer_key: str | None = None) -> dict[str, str]:
    return {"ASTERAI_USER": creds.user.address, "ASTERAI_SIGNER": creds.api_wallet.address,
            "ASTERAI_SIGNER_KEY": signer_key or creds.api_wallet.private_key}  # fmt: skip


def _orders(server) -> int:
    return len(server.accounts.engine.accounts[server.credentials[0].user.address].orders)


def test_no_keys_in_the_environment_exit_2_naming_the_variables(exported_root, tmp_path):
    root = _root(exported_root, tmp_path)
    result = _cli(root, {}, "--base-url", "http://127.0.0.1:9", "--override-ramp")
    assert result.exit_code == 2, result.output
    assert "ASTERAI_SIGNER_KEY" in result.output
    assert not DataPaths.at(root).live.exists()


def test_no_paper_record_exit_2_and_nothing_sent(exported_root, recording, tmp_path):
    root = _root(exported_root, tmp_path)
    with _replay(recording) as server:
        result = _cli(root, _env(server.credentials[0]), "--base-url", server.base_url)
        assert _orders(server) == 0
    assert result.exit_code == 2, result.output
    assert "live trading starts after paper trading" in result.output
    assert not DataPaths.at(root).live.exists()


def test_a_key_the_exchange_refuses_exit_2_before_any_order(exported_root, recording, tmp_path):
    """A well-formed API wallet key that is not the one registered for the user: the
    exchange refuses its signature at the first signed request (the balance), before
    the account is touched."""
    from eth_account import Account

    root = _root(exported_root, tmp_path)
    stranger = Account.create()
    with _replay(recording) as server:
        creds = server.credentials[0]
        env = _env(creds) | {"ASTERAI_SIGNER": stranger.address,
                             "ASTERAI_SIGNER_KEY": stranger.key.hex()}  # fmt: skip
        result = _cli(root, env, "--base-url", server.base_url, "--override-ramp",
                      "--clock-rate", "0")  # fmt: skip
        assert _orders(server) == 0
    assert result.exit_code == 2, result.output
    assert "the exchange refused the key" in result.output
    assert stranger.key.hex() not in result.output and stranger.key.hex()[2:] not in result.output
    assert not DataPaths.at(root).live_journal.exists()


def test_the_first_start_against_the_real_exchange_needs_confirm(exported_root, tmp_path):
    """Nothing reaches the network: the refusal comes before any request; it names the
    account, the allotment and the model the user is about to trade."""
    from eth_account import Account

    root = _root(exported_root, tmp_path)
    user, signer = Account.create(), Account.create()
    env = {"ASTERAI_USER": user.address, "ASTERAI_SIGNER": signer.address,
           "ASTERAI_SIGNER_KEY": signer.key.hex()}  # fmt: skip
    result = _cli(root, env, "--base-url", "https://fapi.asterdex.com", "--override-ramp",
                  "--capital", "20")  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "needs --confirm" in result.output
    assert user.address in result.output and "allotment 20 USDT" in result.output
    assert signer.key.hex()[2:] not in result.output
    assert not DataPaths.at(root).live.exists()


def test_a_paper_record_too_short_or_unreported_is_refused_and_a_reconciled_one_passes(
    exported_root, recording, tmp_path
) -> None:
    """Three paper bars: too short for 14 days; long enough for a setting of 0.1 days
    but not reported yet; reported (the engine equal, the backtest compared): the ramp
    passes and says what the record showed."""
    from asterai.exchange.client import AsterClient
    from asterai.live.ramp import RampError, paper_record
    from asterai.paper.plan import prepare
    from asterai.paper.reconcile import write_report
    from asterai.paper.trader import PaperTrader

    root = _root(exported_root, tmp_path)
    with _replay(recording) as server:
        settings = load_settings(root, base_url=server.base_url, exchange=FAST_EXCHANGE)
        trader = PaperTrader(prepare(settings), clock_rate=0, retry_s=0.05)

        async def three_bars():
            async with AsterClient(settings.base_url, settings.exchange) as client:
                for k in range(3):
                    if k:
                        server.clock.advance(HOUR)
                    await trader.cycle(client)

        asyncio.run(three_bars())
        trader.close()
    plan = prepare(settings)
    with pytest.raises(RampError, match="covers 0.1 days; live.min_paper_days is 14"):
        paper_record(plan)
    short = load_settings(root, base_url=settings.base_url, live={"min_paper_days": 0.1})
    with pytest.raises(RampError, match="asterai paper --report"):
        paper_record(prepare(short))
    write_report(short)
    note = paper_record(prepare(short))
    assert note.startswith("paper record: 0.1 days") and "engine equal" in note


def test_one_live_trader_per_journal_and_the_lock_dies_with_its_process(tmp_path) -> None:
    """A second holder is refused, naming the first; a holder killed with ``kill -9``
    leaves no stale lock."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from asterai.live.lock import Locked, ProcessLock

    path = tmp_path / "live" / "LOCK"
    code = (f"from asterai.live.lock import ProcessLock; import time; "
            f"lock = ProcessLock(__import__('pathlib').Path({str(path)!r})); lock.acquire(); "
            "print('held', flush=True); time.sleep(60)")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(Locked, match=f"pid {proc.pid}"):
            ProcessLock(path).acquire()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 5
    lock = ProcessLock(path)
    while True:
        try:
            lock.acquire()
            break
        except Locked:
            assert time.time() < deadline, "the lock outlived its process"
            time.sleep(0.05)
    lock.release()


def test_a_clock_far_from_the_exchanges_is_refused_before_any_request_is_signed(
    exported_root, recording, tmp_path
) -> None:
    """The replay's clock is the recording's (2025), this machine's is now: as far off
    as a clock can be. Checked (as against the real exchange), the start is refused."""
    from asterai.exchange.client import AsterClient
    from asterai.exchange.signing import V3Key
    from asterai.live.keys import LiveKeys
    from asterai.live.trader import LiveStartError, LiveTrader
    from asterai.paper.plan import prepare

    root = _root(exported_root, tmp_path)
    with _replay(recording) as server:
        settings = load_settings(root, base_url=server.base_url, exchange=FAST_EXCHANGE)
        c = server.credentials[0]
        keys = LiveKeys(V3Key.of(c.user.address, c.api_wallet.private_key,
                                 signer=c.api_wallet.address))  # fmt: skip
        trader = LiveTrader(prepare(settings), keys)

        async def go():
            async with AsterClient(settings.base_url, settings.exchange) as client:
                await trader.preflight(client, check_clock=True)

        with pytest.raises(LiveStartError, match="clock is .* off the exchange's"):
            asyncio.run(go())
        asked = set(server.stats.paths)
        assert asked and not [p for p in asked if "balance" in p or "position" in p], asked
