"""The backtest kernel on the real recording: every number survives an audit."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import browser, copy_root, needs_chromium, rendered_dom

from asterai.backtest.engine import BacktestInputError, load_inputs, params, simulate
from asterai.config import load_settings
from asterai.models.train import walk_forward
from asterai.paths import DataPaths

HOUR = pd.Timedelta(hours=1)
#: The engine's tests need a model that signals often (slots fill, orders wait, filters
#: bite): the triple-barrier logistic member does on the recording, the default ranker
#: (about 30 trades) would leave most of the engine's paths untried.
SMALL = {
    "folds": 3,
    "lstm": {"epochs": 1, "hidden_size": 8},
    "xgboost": {"n_estimators": 40, "objective": "binary"},
    "target": "triple_barrier",
}
#: ...and both sides, so that shorts' stops, targets and fills are exercised too (the
#: default trades longs only).
BOTH = {"sides": "both"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, featured_root) -> Path:
    root = copy_root(featured_root, tmp_path_factory.mktemp("backtest"))
    walk_forward("confluence", load_settings(root, train=SMALL))
    walk_forward("aster_native", load_settings(root, train=SMALL))
    return root


@pytest.fixture(scope="module")
def result(trained):
    settings = load_settings(trained, train=SMALL, strategy=BOTH)
    return simulate(load_inputs(settings, "confluence"), params(settings)), settings


def test_the_final_equity_is_the_sum_of_the_trades(result) -> None:
    res, settings = result
    trades = res.trades
    assert len(trades) > 20  # a real run, not an empty one
    final = settings.strategy.capital + trades["pnl"].sum()
    assert final == pytest.approx(res.final_cash, abs=1e-9)
    assert res.equity["equity"].iloc[-1] == pytest.approx(res.final_cash, abs=1e-9)
    side = np.where(trades["side"] == "long", 1.0, -1.0)
    gross = side * trades["quantity"] * (trades["exit_price"] - trades["entry_price"])
    np.testing.assert_allclose(
        trades["pnl"], gross - trades["fees"] - trades["funding"], atol=1e-12
    )
    # fees: taker on the entry, taker or maker on the exit, never less
    fee_floor = (
        trades["quantity"] * trades["entry_price"] + trades["quantity"] * trades["exit_price"]
    ) * settings.strategy.maker_fee
    assert (trades["fees"] >= fee_floor - 1e-12).all()


def test_every_fill_is_its_rules_price_after_its_signal(result, trained) -> None:
    from asterai.barriers import market_fill
    from asterai.data.filters import read_filters

    res, settings = result
    slip = settings.strategy.slippage
    paths = DataPaths.at(trained)
    ticks = {s: f.get("tick_size") or 0.0 for s, f in read_filters(paths.discovery).items()}
    bars = {}
    for symbol in res.trades["symbol"].unique():
        frame = pd.read_parquet(paths.klines(symbol, "1h"))
        bars[symbol] = frame.set_index("open_time")
    checked = set()
    for row in res.trades.itertuples():
        entry = bars[row.symbol].loc[row.entry_time]
        exit_ = bars[row.symbol].loc[row.exit_time]
        tick, long_ = ticks[row.symbol], row.side == "long"
        # a market entry at the open, the full slippage and the tick against the trader
        assert row.entry_price == market_fill(entry["open"], long_, slip, tick), row
        market_price = {
            "stop": row.stop, "gap through stop": exit_["open"], "time limit": exit_["close"],
            "opposite signal": exit_["open"],
        }.get(row.exit_reason)  # fmt: skip
        if row.exit_reason == "target":
            # a resting limit fills at its own price, and only when the bar traded at
            # least one tick through it
            assert row.exit_price == row.target, row
            beyond = exit_["high"] - row.target if long_ else row.target - exit_["low"]
            assert beyond >= tick - 1e-12, row
        elif market_price is not None:
            assert row.exit_price == market_fill(market_price, not long_, slip, tick), row
        checked.add(row.exit_reason)
        assert row.entry_time == row.signal_time + HOUR  # a signal at t's close fills at t+1's open
        assert row.exit_time >= row.entry_time
    assert {"stop", "target"} <= checked


def test_the_sides_setting_trades_only_its_sides(result, trained) -> None:
    """strategy.sides: long only or short only trades that side alone, where the entry
    rule called for it (a signal for the other side is no trade, not its opposite)."""
    both = result[0].trades
    assert set(both["side"]) == {"long", "short"}  # the fixture's model signals both
    for sides in ("long", "short"):
        settings = load_settings(trained, train=SMALL, strategy={"sides": sides})
        res = simulate(load_inputs(settings, "confluence"), params(settings))
        assert len(res.trades) > 0 and set(res.trades["side"]) == {sides}
        preds = pd.read_parquet(DataPaths.at(trained).predictions("confluence"))
        at = res.trades.merge(
            preds, left_on=["symbol", "signal_time"], right_on=["symbol", "open_time"]
        )
        mine, other = (at["p_long"], at["p_short"]) if sides == "long" else (
            at["p_short"], at["p_long"]
        )
        assert len(at) == len(res.trades)
        assert (mine >= settings.train.threshold).all() and (mine >= other).all()


def test_stops_fill_at_the_stop_or_worse(result) -> None:
    trades = result[0].trades
    stopped = trades[trades["exit_reason"].isin(["stop", "gap through stop"])]
    assert len(stopped) > 0
    longs = stopped["side"] == "long"
    assert (stopped.loc[longs, "exit_price"] <= stopped.loc[longs, "stop"] + 1e-9).all()
    assert (stopped.loc[~longs, "exit_price"] >= stopped.loc[~longs, "stop"] - 1e-9).all()
    targets = trades[trades["exit_reason"] == "target"]
    assert len(targets) > 0
    # a resting limit fills at its own price, never better, even when the bar gaps past it
    assert (targets["exit_price"] == targets["target"]).all()


def test_never_more_than_the_position_limit(result) -> None:
    res, settings = result
    assert res.equity["open_positions"].max() <= settings.strategy.max_positions
    # and from the trades themselves: positions open at each bar's close
    trades = res.trades
    for t in res.equity["time"]:
        holding = ((trades["entry_time"] <= t) & (trades["exit_time"] > t)).sum()
        assert holding <= settings.strategy.max_positions
    # one position per symbol at a time
    for _, group in trades.sort_values("entry_time").groupby("symbol"):
        assert (
            group["entry_time"].iloc[1:].to_numpy() >= group["exit_time"].iloc[:-1].to_numpy()
        ).all()


def test_risk_orders_and_filters(result, trained) -> None:
    res, settings = result
    trades = res.trades
    equity = res.equity.set_index("time")["equity"]
    budget = settings.strategy.risk_per_trade * equity.loc[trades["signal_time"]].to_numpy()
    at_risk = trades["quantity"] * (trades["entry_price"] - trades["stop"]).abs()
    assert (at_risk <= budget + 1e-9).all()
    # what a stop really cost, fees and slippage included, stays within the budget
    # (a gap through the stop is the one way past it, and is reported as such)
    stopped = (trades["exit_reason"] == "stop").to_numpy()
    assert stopped.sum() > 10
    assert (-trades["pnl"].to_numpy()[stopped] <= budget[stopped] * 1.02).all()
    discovery = json.loads(DataPaths.at(trained).discovery.read_text())
    filters = {e["symbol"]: e["filters"] for e in discovery["symbols"]}
    for row in trades.itertuples():
        step = filters[row.symbol]["step_size"]
        assert abs(row.quantity / step - round(row.quantity / step)) < 1e-6, row
        assert (
            row.quantity * row.entry_price
            >= res.inputs.min_notional[res.inputs.symbols.index(row.symbol)]
        )
    reasons = set(res.rejected["reason"])
    assert "no free position slot" in reasons  # 50 USDT and 5 slots: most signals wait
    assert reasons <= {
        "below the minimum notional", "quantity below one lot step", "no free position slot",
        "over the leverage limit", "no next bar to fill at", "trading stopped by the circuit breaker",
        "market closed (no trade in the fill bar)",
    }  # fmt: skip


def test_entries_only_on_tradeable_bars_with_out_of_sample_predictions(result, trained) -> None:
    res, _ = result
    universe = pd.read_parquet(DataPaths.at(trained).universe).set_index(["symbol", "open_time"])
    preds = pd.read_parquet(DataPaths.at(trained).predictions("confluence")).set_index(
        ["symbol", "open_time"]
    )
    keys = list(zip(res.trades["symbol"], res.trades["signal_time"], strict=True))
    assert universe.loc[keys, "tradeable"].all()
    # and every fill happened in a bar where the market traded
    bars = {
        s: pd.read_parquet(DataPaths.at(trained).klines(s, "1h")).set_index("open_time")
        for s in res.trades["symbol"].unique()
    }
    for row in res.trades.itertuples():
        assert bars[row.symbol].loc[row.entry_time, "volume"] > 0, row
    assert preds.index.isin(keys).sum() == len(set(keys))


def test_bad_inputs_are_refused(trained, tmp_path) -> None:
    root = tmp_path / "bad"
    shutil.copytree(trained / "data", root / "data")
    shutil.copytree(trained / "models", root / "models")
    settings = load_settings(root)
    path = DataPaths.at(root).predictions("confluence")
    DataPaths.at(root).predictions("aster_native").unlink()
    with pytest.raises(BacktestInputError, match="aster_native.parquet does not exist"):
        load_inputs(settings, "aster_native")
    # a prediction moved into its fold's training window is in-sample: refused
    table = pq.read_table(path)
    frame = table.to_pandas()
    frame.loc[0, "open_time"] = frame.loc[0, "open_time"] - pd.Timedelta(days=5)
    pq.write_table(pa_table(frame, table.schema.metadata), path)
    with pytest.raises(BacktestInputError, match="outside their fold's test window"):
        load_inputs(settings, "confluence")
    # predictions of another run than the models: refused
    meta = dict(table.schema.metadata)
    meta[b"asterai.predictions"] = json.dumps(
        {**json.loads(meta[b"asterai.predictions"]), "run_id": "someone-else"}
    ).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)
    with pytest.raises(BacktestInputError, match="does not belong to the models"):
        load_inputs(settings, "confluence")


def test_bad_inputs_leave_the_last_results_whole(written, tmp_path) -> None:
    from click.testing import CliRunner

    from asterai.cli import main
    from asterai.config import ConfigError

    src, _ = written
    root = tmp_path / "bad"
    for part in ("data", "models"):
        shutil.copytree(src / part, root / part)
    folder = DataPaths.at(root).backtest_results
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    # a threshold outside 0..1 is refused before anything runs
    with pytest.raises(ConfigError, match="threshold"):
        load_settings(root, train={"threshold": 1.5})
    (root / "asterai.toml").write_text("[train]\nthreshold = 1.5\n")
    run = CliRunner().invoke(main, ["backtest", "--data-root", str(root)])
    assert run.exit_code == 2 and "threshold" in run.output, run.output
    (root / "asterai.toml").unlink()
    # a traded symbol's prices gone: the gate names the file, nothing is written
    DataPaths.at(root).klines("BTCUSDT", "1h").unlink()
    run = CliRunner().invoke(main, ["backtest", "--data-root", str(root)])
    assert run.exit_code == 1 and "BTCUSDT_1h.parquet" in run.output, run.output
    # no predictions: says which command makes them
    DataPaths.at(root).predictions("confluence").unlink()
    run = CliRunner().invoke(main, ["backtest", "--data-root", str(root)])
    assert run.exit_code == 1 and "asterai train confluence" in run.output, run.output
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before


def pa_table(frame: pd.DataFrame, metadata):
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    return table.replace_schema_metadata(metadata)


@pytest.fixture(scope="module")
def written(trained, tmp_path_factory):
    """``asterai backtest`` run once on a copy of the trained folder."""
    from click.testing import CliRunner

    from asterai.cli import main

    root = tmp_path_factory.mktemp("cli")
    shutil.copytree(trained / "data", root / "data")
    shutil.copytree(trained / "models", root / "models")
    (root / "asterai.toml").write_text("[train]\nfolds = 3\n")
    result = CliRunner().invoke(main, ["backtest", "--data-root", str(root)])
    return root, result


def test_the_command_writes_the_results_and_grades_the_criteria(written) -> None:
    root, result = written
    folder = DataPaths.at(root).backtest_results
    assert sorted(p.name for p in folder.iterdir()) == [
        "aster_native", "baselines_equity.csv", "drawdown.png", "equity.csv", "equity.png",
        "exposure.png", "metrics.json", "monthly_returns.png", "rejected_orders.csv",
        "report.html", "trade_pnl.png", "trades.csv",
    ]  # fmt: skip
    m = json.loads((folder / "metrics.json").read_text())
    for key in ("sharpe_ratio", "win_rate", "max_drawdown", "significant"):
        assert m["criteria"][key]["verdict"] in ("PASS", "FAIL")
    failed = any(c["verdict"] == "FAIL" for c in m["criteria"].values())
    assert result.exit_code == (1 if failed else 0), result.output
    assert m["window"]["out_of_sample"] is True and m["trades"] == len(
        pd.read_csv(folder / "trades.csv")
    )
    equity = pd.read_csv(folder / "equity.csv")
    assert equity["equity"].iloc[-1] == pytest.approx(m["final_equity"])
    baselines = pd.read_csv(folder / "baselines_equity.csv")
    assert (baselines["time"] == equity["time"]).all()  # the model's own bars
    for name in ("buy_and_hold_btc", "equal_weight_universe", "rule_confluence"):
        b = m["baselines"][name]
        assert isinstance(b["model_beats_it"], bool), b
        assert b["final_equity"] > 0
        assert baselines[name].iloc[-1] == pytest.approx(b["final_equity"], rel=1e-12)
        # the paired bootstrap: an interval around the observed difference, a probability
        low, high = b["difference_interval_95"]
        assert low <= b["model_sharpe_minus_baseline"] <= high
        assert 0.0 <= b["probability_model_better"] <= 1.0
        assert b["by_more_than_the_noise"] == (low > 0)
    assert "baseline buy_and_hold_btc" in " ".join(result.output.split())
    by_cat = m["by_category"]
    assert sum(c["trades"] for c in by_cat.values()) == m["trades"]
    assert set(by_cat) <= {"major", "alt", "stock_perpetual", "new_listing"}
    assert sum(c["pnl"] for c in by_cat.values()) == pytest.approx(m["final_equity"] - 50.0)


def test_the_report_says_where_the_money_came_from(written) -> None:
    """By side, by the decile of each trade's own score and by symbol, recomputed from
    trades.csv and the predictions; the page shows the section."""
    root, _ = written
    folder = DataPaths.at(root).backtest_results
    src = json.loads((folder / "metrics.json").read_text())["money_sources"]
    trades = pd.read_csv(folder / "trades.csv", parse_dates=["signal_time"])
    for side in ("long", "short"):
        pnl = trades.loc[trades["side"] == side, "pnl"]
        assert src["by_side"][side]["trades"] == len(pnl)
        assert src["by_side"][side]["pnl"] == pytest.approx(pnl.sum(), abs=1e-9)
    preds = pd.read_parquet(DataPaths.at(root).predictions("confluence"))
    at_signal = trades.merge(
        preds, left_on=["symbol", "signal_time"], right_on=["symbol", "open_time"], how="left"
    )
    score = np.where(at_signal["side"] == "long", at_signal["p_long"], at_signal["p_short"])
    assert np.isfinite(score).all()  # every trade was signalled by an out-of-sample row
    rank = pd.Series(score).rank(method="average")
    decile = np.minimum(((rank - 1) * 10 // len(trades)).astype(int), 9) + 1
    want = trades.groupby(decile)["pnl"]
    assert [d["trades"] for d in src["by_decile"]] == list(want.size())
    assert [d["mean_pnl"] for d in src["by_decile"]] == pytest.approx(list(want.mean()))
    assert [d["median_pnl"] for d in src["by_decile"]] == pytest.approx(list(want.median()))
    per_symbol = trades.groupby("symbol")["pnl"].sum().sort_values()
    assert src["winners"] or src["losers"]
    if src["losers"]:
        assert src["losers"][0]["symbol"] == per_symbol.index[0]
        assert src["losers"][0]["pnl"] == pytest.approx(per_symbol.iloc[0])
    if src["winners"]:
        assert src["winners"][0]["symbol"] == per_symbol.index[-1]
    page = (folder / "report.html").read_text()
    assert "Where the money came from" in page and 'id="deciles"' in page
    # the training's own figures on the same rows, from the model's config of that run
    config = json.loads(
        (DataPaths.at(root).confluence_models / "ensemble_config.json").read_text()
    )
    assert src["training"]["deciles"] == config["training_summary"]["deciles"]
    assert html.escape(config["training_summary"]["earnings"]) in page


def test_buy_and_hold_btc_by_hand(trained) -> None:
    from asterai.backtest.baselines import buy_and_hold_btc

    settings = load_settings(trained)
    inputs = load_inputs(settings, "confluence")
    curve = buy_and_hold_btc(inputs, settings)
    j = inputs.symbols.index("BTCUSDT")
    st = settings.strategy
    first = int(np.flatnonzero(np.isfinite(inputs.open_[:, j]))[0])
    entry = inputs.open_[first, j] * (1 + st.slippage)
    last = inputs.close[np.flatnonzero(np.isfinite(inputs.close[:, j]))[-1], j]
    by_hand = st.capital * (1 - st.taker_fee) / entry * (last - entry) + st.capital * (
        1 - st.taker_fee
    )
    assert curve["equity"].iloc[-1] == pytest.approx(by_hand, rel=1e-12)


def test_both_models_are_graded_side_by_side(written) -> None:
    root, _ = written
    folder = DataPaths.at(root).backtest_results
    m = json.loads((folder / "metrics.json").read_text())
    other = json.loads((folder / "aster_native" / "metrics.json").read_text())
    assert other["model"] == "aster_native" and m["model"] == "confluence"
    assert set(m["models"]) == {"confluence", "aster_native"}
    for name, own in (("confluence", m), ("aster_native", other)):
        headline = m["models"][name]
        for key in ("final_equity", "sharpe_ratio", "trades", "criteria", "window"):
            assert headline[key] == own[key], (name, key)
    trades = pd.read_csv(folder / "aster_native" / "trades.csv")
    equity = pd.read_csv(folder / "aster_native" / "equity.csv")
    assert len(trades) == other["trades"]
    assert 50.0 + trades["pnl"].sum() == pytest.approx(equity["equity"].iloc[-1])


def test_monthly_returns_chain_to_the_total_return(written) -> None:
    from asterai.backtest.report import monthly_returns

    root, _ = written
    folder = DataPaths.at(root).backtest_results
    m = json.loads((folder / "metrics.json").read_text())
    equity = pd.read_csv(folder / "equity.csv", parse_dates=["time"])
    table = monthly_returns(equity, 50.0)
    months = table.stack().dropna()
    # independently: pandas' month-end resampling of the equity, against the capital
    ends = equity.set_index("time")["equity"].resample("ME").last().dropna()
    expected = ends / np.concatenate([[50.0], ends.to_numpy()[:-1]]) - 1
    assert len(months) == len(expected)
    np.testing.assert_allclose(months.to_numpy(), expected.to_numpy(), rtol=1e-12)
    assert [(y, mth) for y, mth in months.index] == [(t.year, t.month) for t in expected.index]
    assert np.prod(1 + months.to_numpy()) - 1 == pytest.approx(m["total_return"])


@needs_chromium
def test_the_report_renders_whole_in_a_real_browser(written, tmp_path) -> None:
    root, _ = written
    folder = DataPaths.at(root).backtest_results
    m = json.loads((folder / "metrics.json").read_text())
    page = (folder / "report.html").resolve().as_uri()
    dom = rendered_dom(page)
    # the page's own check, run by the browser: every chart decoded
    assert 'data-charts="5/5"' in dom
    # the verdict comes first, and says what metrics.json says
    failed = [k for k, c in m["criteria"].items() if k != "significant" and c["verdict"] == "FAIL"]
    verdict = dom.index('class="verdict')
    assert verdict < dom.index("<h2>")
    assert dom[verdict:].split(">", 1)[1].startswith("FAIL" if failed else "PASS")
    assert ("not significant" in dom) == (m["criteria"]["significant"]["verdict"] == "FAIL")
    assert f"{m['final_equity']:,.3f}" in dom and f"{m['trades']} trades" in dom
    shot = tmp_path / "report.png"
    browser("--window-size=1280,2000", f"--screenshot={shot}", page)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2000, 1280)
    assert pixels.std() > 20  # text and charts, not a blank page


def test_cost_sensitivity_reruns_the_strategy_at_scaled_costs(written) -> None:
    from asterai.backtest.engine import cost_sensitivity

    root, _ = written
    m = json.loads((DataPaths.at(root).backtest_results / "metrics.json").read_text())
    cost = m["cost_sensitivity"]
    rows = {c["multiplier"]: c for c in cost["table"]}
    assert set(rows) == {0.0, 1.0, 2.0}
    # the 1x row is the run itself
    assert rows[1.0]["total_return"] == pytest.approx(m["total_return"], rel=1e-12)
    assert rows[1.0]["trades"] == m["trades"]
    assert rows[0.0]["total_return"] > rows[2.0]["total_return"]  # costs cost
    st = load_settings(root).strategy
    assert cost["round_trip_cost_at_1x"] == pytest.approx(2 * (st.taker_fee + st.slippage))
    # the break-even is where the return crosses zero, by a whole new run on each side
    settings = load_settings(root, train=SMALL)
    inputs = load_inputs(settings, "confluence")
    p = params(settings, inputs)

    def ret(k: float) -> float:
        q = p._replace(
            taker_fee=p.taker_fee * k, maker_fee=p.maker_fee * k, slippage=p.slippage * k
        )
        e = simulate(inputs, q).equity["equity"]
        return e.iloc[-1] / 50.0 - 1.0

    be = cost["break_even_multiplier"]
    if rows[0.0]["total_return"] <= 0:
        assert be == 0.0 and cost["break_even"].startswith("none")
    elif be is not None:
        assert ret(be - 1e-4) > 0 >= ret(be + 1e-4)
        assert cost["break_even_round_trip_cost"] == pytest.approx(
            be * 2 * (st.taker_fee + st.slippage)
        )
    assert cost_sensitivity(inputs, p, settings) == cost  # deterministic


def read_tables(page: str) -> dict[str, list[list[str]]]:
    """Every ``<table id=...>`` of the page as rows of cell texts (header row first)."""
    from html.parser import HTMLParser

    tables: dict[str, list[list[str]]] = {}

    class Reader(HTMLParser):
        table: str | None = None
        cell: list[str] | None = None

        def handle_starttag(self, tag, attrs):
            if tag == "table":
                self.table = dict(attrs).get("id")
                tables[self.table] = []
            elif tag == "tr" and self.table:
                tables[self.table].append([])
            elif tag in ("td", "th") and self.table:
                self.cell = []

        def handle_endtag(self, tag):
            if tag in ("td", "th") and self.cell is not None:
                tables[self.table][-1].append("".join(self.cell).strip())
                self.cell = None
            elif tag == "table":
                self.table = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell.append(data)

    Reader().feed(page)
    return tables


def number(text: str) -> float | None:
    """A shown figure back to a number: '+1.23%' -> 0.0123, '12.5%' -> 0.125,
    '1,234.500' -> 1234.5, '7.5 bp' -> 0.00075, 'n/a' -> None."""
    text = text.strip()
    if text.startswith("n/a"):
        return None
    if text.endswith("bp"):
        return float(text[:-2]) / 1e4
    if text.endswith("%"):
        return float(text[:-1].replace(",", "")) / 100
    return float(text.replace(",", ""))


def close_to(shown: str, value, tol: float) -> bool:
    got = number(shown)
    return (got is None and value is None) or (
        got is not None and value is not None and abs(got - value) <= tol
    )


def test_every_number_in_the_report_tables_is_the_metrics_json_number(written) -> None:
    root, _ = written
    folder = DataPaths.at(root).backtest_results
    m = json.loads((folder / "metrics.json").read_text())
    t = read_tables((folder / "report.html").read_text(encoding="utf-8"))
    assert {"criteria", "models", "baselines", "significance", "costs", "figures", "exits",
            "rejected", "categories", "trades"} <= set(t)  # fmt: skip
    PCT, SHARE, NUM = 0.00005 + 1e-12, 0.0005 + 1e-12, 0.0005 + 1e-12

    # the verdict table: measured value and interval of every criterion
    for row in t["criteria"][1:]:
        key = row[0].replace(" ", "_")
        c = m["criteria"][key]
        assert close_to(
            row[2], c["value"], SHARE if key in ("win_rate", "max_drawdown") else NUM
        ), row
        assert row[4] == c["verdict"]
        if c.get("interval_95"):
            low, high = row[3].split(" .. ")
            tol = SHARE if key in ("win_rate", "max_drawdown") else 0.005
            assert close_to(low, c["interval_95"][0], tol) and close_to(
                high, c["interval_95"][1], tol
            )

    # both models side by side
    for row in t["models"][1:]:
        h = m if row[0] == m["model"] else m["models"][row[0]]
        assert int(row[2]) == h["trades"]
        assert close_to(row[3], h["total_return"], PCT)
        assert close_to(row[4].split(" [")[0], h["sharpe_ratio"], NUM)
        assert close_to(row[5], h["max_drawdown"], SHARE) and close_to(row[6], h["win_rate"], SHARE)
        assert close_to(row[7], h["probabilistic_sharpe_ratio"], NUM)

    # the baselines and the paired comparison
    for row in t["baselines"][1:]:
        b = m["baselines"][row[0].replace(" ", "_")]
        assert close_to(row[1], b["total_return"], PCT) and close_to(row[2], b["sharpe_ratio"], NUM)
        assert close_to(row[3], b["max_drawdown"], SHARE)
        assert close_to(row[4].split(" [")[0], b["model_sharpe_minus_baseline"], NUM)
        low, high = row[4].split(" [")[1].rstrip("]").split(" .. ")
        assert close_to(low, b["difference_interval_95"][0], 0.005)
        assert close_to(high, b["difference_interval_95"][1], 0.005)
        assert close_to(row[5], b["probability_model_better"], SHARE)
        assert row[6] == ("yes" if b["model_beats_it"] else "no")
        assert row[7] == ("yes" if b["by_more_than_the_noise"] else "no")

    # significance: both samplings and the minimum track record
    sig = {r[0]: r[1] for r in t["significance"][1:]}
    shown, interval = sig["Sharpe ratio, daily returns [95%]"].split(" [")
    assert close_to(shown, m["sharpe_ratio"], NUM)
    if m["confidence_95"]["sharpe_ratio"]:
        low, high = interval.rstrip("]").split(" .. ")
        assert close_to(low, m["confidence_95"]["sharpe_ratio"][0], 0.005)
        assert close_to(high, m["confidence_95"]["sharpe_ratio"][1], 0.005)
    assert close_to(sig["Sharpe ratio, per-bar returns (naive)"], m["sharpe_ratio_per_bar"], NUM)
    assert close_to(sig["probabilistic Sharpe ratio, daily returns"],
                    m["probabilistic_sharpe_ratio"], NUM)  # fmt: skip
    assert close_to(sig["probabilistic Sharpe ratio, per-bar returns (naive)"],
                    m["probabilistic_sharpe_ratio_per_bar"], NUM)  # fmt: skip
    trl = m["min_track_record"]
    assert close_to(sig["days observed"], trl["days_observed"], 0)
    assert close_to(sig["days needed for a 95% PSR at this Sharpe"], trl["days_needed"], NUM)
    assert close_to(sig["more days needed"], trl["more_days"], NUM)

    # costs at 0x, 1x and 2x
    for row, c in zip(t["costs"][1:], m["cost_sensitivity"]["table"], strict=True):
        assert row[0] == f"{c['multiplier']:g}x"
        assert close_to(row[1], c["round_trip_cost"], 0.05e-4)
        assert close_to(row[2], c["total_return"], PCT) and close_to(row[3], c["sharpe_ratio"], NUM)
        assert int(row[4]) == c["trades"]

    # the figures table
    fig = {r[0]: r[1] for r in t["figures"][1:]}
    for label, key, tol in (
        ("final equity, USDT", "final_equity", NUM), ("total return", "total_return", PCT),
        ("Sharpe ratio (daily returns)", "sharpe_ratio", NUM),
        ("Sortino ratio (daily returns)", "sortino_ratio", NUM),
        ("max drawdown", "max_drawdown", SHARE), ("longest drawdown, bars", "max_drawdown_bars", 0),
        ("win rate", "win_rate", SHARE), ("profit factor", "profit_factor", NUM),
        ("average win, USDT", "average_win", NUM), ("average loss, USDT", "average_loss", NUM),
        ("time in market (bars with a position)", "time_in_market", SHARE),
        ("turnover (traded notional / capital)", "turnover", NUM),
        ("fees paid, USDT", "fees_paid", NUM), ("funding paid, USDT", "funding_paid", NUM),
    ):  # fmt: skip
        assert close_to(fig[label], m[key], tol), (label, fig[label], m[key])
    for label, key in (("CAGR", "cagr"), ("Calmar ratio", "calmar_ratio")):
        if m[key] is None:  # a month of bars: never annualised
            assert fig[label] == "n/a (window too short)"
        else:
            assert close_to(fig[label], m[key], PCT if key == "cagr" else NUM)

    # orders, rejections and categories
    assert {r[0]: int(r[1]) for r in t["exits"][1:]} == m["exit_reasons"]
    shown = {r[0]: int(r[1]) for r in t["rejected"][1:] if r[0] != "none"}
    assert shown == m["rejected_orders"]
    for row in t["categories"][1:]:
        c = m["by_category"][row[0]]
        assert int(row[1]) == c["trades"] and close_to(row[2], c["win_rate"], SHARE)
        assert close_to(row[3], c["pnl"], NUM)
    # and the trades table is trades.csv's first rows
    trades = pd.read_csv(folder / "trades.csv")
    assert len(t["trades"]) - 1 == min(200, len(trades))
    header = t["trades"][0]
    for row, (_, want) in zip(t["trades"][1:], trades.head(200).iterrows(), strict=False):
        got = dict(zip(header, row, strict=True))
        assert got["symbol"] == want["symbol"] and got["exit_reason"] == want["exit_reason"]
        for col in ("entry_price", "exit_price", "quantity", "fees", "pnl"):
            assert float(got[col]) == pytest.approx(want[col], rel=1e-9)
