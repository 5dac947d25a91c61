"""The decisions live trading takes at a bar's close (``live.decide``: the kernel's own
``decide_nb`` on the account read back from the exchange) are the simulated broker's,
bar by bar over the recording's last two weeks, when the account is the same."""

from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import batch_inputs

from asterai.config import load_settings

START = int(pd.Timestamp("2025-10-01T03:00:00Z").value // 1_000_000)
LAST = int(pd.Timestamp("2025-10-15T03:00:00Z").value // 1_000_000)


def test_the_close_decided_on_the_account_after_its_fills_is_the_simulated_brokers(
    exported_root,
) -> None:
    """At every bar: the simulated broker applies the whole bar (fills, then the close);
    the live path takes the account as it stands after the fills (the positions, which
    the close does not change), forgets the decisions, and decides the close alone.
    The orders for the next open are the same, entries and exits, in the same order."""
    from asterai.backtest import engine as backtest
    from asterai.backtest import kernel
    from asterai.deploy.runtime import OnnxModel
    from asterai.live.decide import decide
    from asterai.paper.broker import Bar, Controls, SimulatedBroker
    from asterai.paths import DataPaths

    settings = load_settings(exported_root)
    model = OnnxModel(DataPaths.at(exported_root).models("confluence") / "onnx")
    inputs = batch_inputs(exported_root, sorted(model.manifest["service"]["symbols"]), START, LAST)
    p = backtest.params(settings, inputs)
    broker = SimulatedBroker(p, inputs.tick, inputs.step, inputs.min_notional)
    compared = with_orders = 0
    for t in range(len(inputs.times) - 1):
        bar = Bar(t, int(inputs.times[t]), inputs.open_[t], inputs.high[t], inputs.low[t],
                  inputs.close[t], inputs.volume[t], inputs.tradeable[t], inputs.p_long[t],
                  inputs.p_short[t], inputs.atr[t], inputs.funding[t])  # fmt: skip
        before = kernel.State(*[a.copy() for a in broker.state])
        events = broker.apply(bar, Controls())
        if broker.state.account[2] != 0.0 or before.account[2] != 0.0:
            continue  # the breaker: decided in the close, not replayed here
        live = kernel.State(*[a.copy() for a in broker.state])  # decide forgets its orders
        live.account[:] = before.account  # the cash after the fills is the broker's
        live.account[0] = broker.state.account[0]
        live.last_close[:] = before.last_close
        orders, _, curve = decide(live, bar, inputs.tick, inputs.step, p)
        np.testing.assert_array_equal(orders, events.orders, err_msg=f"bar {t}")
        np.testing.assert_allclose(curve, events.curve, rtol=0, atol=1e-12, err_msg=f"bar {t}")
        compared += 1
        with_orders += len(orders) > 0
    print(f"{compared} bars compared, {with_orders} with orders")
    assert compared > 300 and with_orders > 20, (compared, with_orders)


def test_decided_entries_sent_fill_and_rest_protected_where_the_simulated_broker_puts_them(
    exported_root, recording, tmp_path
) -> None:
    """The first bar of the two weeks with decided entries: sent to the replay's
    exchange at the next bar's open, each fills at the simulated broker's entry price,
    and its stop and target rest on the exchange at the simulated broker's stop and
    target (placed from the exchange's own fill with the kernel's placement)."""
    import asyncio
    from decimal import Decimal

    from conftest import FAST_EXCHANGE

    from asterai.backtest import engine as backtest
    from asterai.config import ExchangeSettings
    from asterai.deploy.runtime import OnnxModel
    from asterai.exchange.client import AsterClient
    from asterai.exchange.private import PrivateClient
    from asterai.exchange.replay import ReplayServer
    from asterai.exchange.signing import V3Key
    from asterai.live.execute import execute
    from asterai.live.intents import Intents, Leg, State
    from asterai.paper.broker import ENTRY, Bar, Controls, SimulatedBroker
    from asterai.paths import DataPaths

    settings = load_settings(exported_root)
    model = OnnxModel(DataPaths.at(exported_root).models("confluence") / "onnx")
    inputs = batch_inputs(exported_root, sorted(model.manifest["service"]["symbols"]), START, LAST)
    p = backtest.params(settings, inputs)
    broker = SimulatedBroker(p, inputs.tick, inputs.step, inputs.min_notional)

    def bar(t: int) -> Bar:
        return Bar(t, int(inputs.times[t]), inputs.open_[t], inputs.high[t], inputs.low[t],
                   inputs.close[t], inputs.volume[t], inputs.tradeable[t], inputs.p_long[t],
                   inputs.p_short[t], inputs.atr[t], inputs.funding[t])  # fmt: skip

    t = 0
    while True:
        events = broker.apply(bar(t), Controls())
        if (events.orders[:, 1] == ENTRY).any():
            break
        t += 1
    decided = kernel_copy(broker.state)
    after = broker.apply(bar(t + 1), Controls())  # the simulated fills at the next open
    opened = {int(row[0]): row for row in after.positions if int(row[6]) == t + 1}
    assert opened, "the decided entries opened nothing in the simulation"
    with ReplayServer(recording, clock_speed=0, play_from_ms=int(inputs.times[t + 1]) + 1000,
                      accounts=1, balance=str(settings.strategy.capital)) as server:  # fmt: skip
        c = server.credentials[0]
        key = V3Key.of(c.user.address, c.api_wallet.private_key, signer=c.api_wallet.address)
        journal = Intents(tmp_path / "live.sqlite")

        async def go():
            async with AsterClient(server.base_url, ExchangeSettings(**FAST_EXCHANGE)) as client:
                api = PrivateClient(client, key)
                return await execute(journal, api, c.user.address, t, inputs.symbols,
                                     events.orders, decided, {}, inputs.tick, inputs.step, p)  # fmt: skip

        sent = asyncio.run(go())
    entries = [s for s in sent if s.leg is Leg.ENTRY]
    assert len(entries) == (events.orders[:, 1] == ENTRY).sum()
    for s in entries:
        j = inputs.symbols.index(s.symbol)
        if j not in opened:  # refused in the simulation (a filter): refused here too
            assert s.state is not State.FILLED, s
            continue
        row = opened[j]
        assert s.state is State.FILLED and abs(float(s.fill) - row[3]) < 1e-9
        assert s.protection == {Leg.STOP: State.NEW, Leg.TARGET: State.NEW}
        legs = {r["leg"]: r for r in journal.rows("symbol = ? AND leg IN ('s', 't')", (s.symbol,))}
        assert abs(float(Decimal(legs["s"]["stop_price"])) - row[4]) < 1e-9
        assert abs(float(Decimal(legs["t"]["price"])) - row[5]) < 1e-9


def kernel_copy(state):
    from asterai.backtest import kernel

    return kernel.State(*[a.copy() for a in state])
