"""Rate-limit probe: what the exchange declares, what it reports back, and what that means
for a collection.

``probe(client, settings)`` returns the document that ``run_ratelimit_probe`` writes,
atomically, to ``data/aster_rate_limit_test.json``:

``declared``
    ``rate_limits`` (the ``exchangeInfo.rateLimits`` list as sent) and ``request_weight``
    (the parsed REQUEST_WEIGHT entry: ``limit``, ``window_seconds``, ``header``).
``probe``
    ``samples`` light requests (``/fapi/v1/time`` and ``/fapi/v1/ping`` alternately,
    weight 1 each), sent one after the other. The probe's whole weight, exchangeInfo
    included, stays within ``PROBE_MAX_SHARE`` (5%) of the declared limit: ``samples`` is
    capped to fit and ``samples_capped`` says so. A 429 is information, not a failure:
    it ends the probing at once (``stopped_by``; the probe must never provoke a ban),
    the probe waits what ``Retry-After`` says, records where it met the limit and at
    what rate (``met_limit``), and recommends a client below it
    (``recommendations.client``: half the configured weight share, one request in
    flight), which the collector adopts. Temporary failures (5xx, dropped connections)
    are retried by the client as usual. The probe also stops before
    a request if the server's own count shows the IP within ``PROBE_STOP_SHARE`` of the
    limit (someone else is using it), so the probe itself never provokes a 429.
    Latency (ms): p50/p90/p99/max/mean of the successful samples. Header check: the
    server's used-weight header must be on every response; between consecutive
    responses its increase must equal the weight of the later request
    (``confirmed_steps``); a decrease is a window reset (``window_resets``), not a
    mismatch; anything else is an ``unconfirmed_step`` (another client on the IP, or a
    server that counts differently).
``recommendations``
    ``kline_page``: the weight tiers of ``GET /fapi/v1/klines`` (largest limit of each
    tier, its weight and weight per bar) and the best one (499 bars for weight 2, 0.004
    per bar). ``concurrency``: requests in flight needed to spend the budget at the
    measured p50 latency, ``ceil(limit / window_s / page_weight * p50_s)`` clamped to
    1..8. ``collection_estimate``: the weight and time of the configured collection
    (``settings.collect``) at the declared limit, with the formula spelled out.

Top level: ``generated_at`` (local clock), ``base_url``, ``server_time`` (from the last
``/time`` sample), ``asterai_version``, ``ok``, ``problems`` (what fails the stage: a
418 ban, or no declared REQUEST_WEIGHT limit) and ``notes`` (everything else worth
knowing: a 429 met, samples that failed, a header that did not add up).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from asterai import __version__
from asterai.atomic import write_json
from asterai.config import Settings
from asterai.data.discovery import is_perpetual, utc_now_iso
from asterai.exchange.client import AsterClient, Response
from asterai.exchange.errors import (
    ExchangeError,
    IPBanned,
    RateLimited,
    RetriesExhausted,
    Unreachable,
)
from asterai.exchange.limiter import RateLimit
from asterai.exchange.weights import (
    FUNDING_MAX_LIMIT,
    KLINES_MAX_LIMIT,
    klines_weight,
)
from asterai.intervals import DAY_MS, interval_ms, iso_ms
from asterai.paths import DataPaths

__all__ = [
    "collection_estimate",
    "kline_page_tiers",
    "probe",
    "recommended_concurrency",
    "run_ratelimit_probe",
]

#: The probe spends at most this share of the declared limit, exchangeInfo included.
PROBE_MAX_SHARE = 0.05
#: Stop before a request when the server reports the IP above this share of the limit.
PROBE_STOP_SHARE = 0.90
#: Recommended concurrency is clamped to this range.
MIN_CONCURRENCY, MAX_CONCURRENCY = 1, 8
#: After a 429 the collection uses this share of the configured weight share...
PROBE_BACKOFF_SHARE = 0.5
#: ... or the share the server reported as used when it pushed back, never below this.
MIN_SHARE_AFTER_429 = 0.25
#: The probe's own client: a few retries within a short budget.
PROBE_MAX_RETRIES, PROBE_RETRY_BUDGET_S = 5, 15.0
#: A probe older than this no longer shapes the collection.
RECOMMENDATION_MAX_AGE_S = 24 * 3600
#: Funding events per day assumed for the estimate (8-hour funding, the common case).
FUNDING_EVENTS_PER_DAY = 3

ProgressCallback = Callable[[int], None]


# --------------------------------------------------------------------------- helpers


async def _send_once(
    client: AsterClient, endpoint: str, params: dict[str, Any] | None = None
) -> Response:
    """``GET /fapi/v1/{endpoint}`` that raises at the first 429 instead of waiting it out.

    The probe must stop at once on a 429; temporary failures are still retried.
    """
    return await client.request(endpoint, params, retry_rate_limited=False)


async def _met_limit(
    client: AsterClient,
    where: str,
    err: RateLimited,
    used: int | None,
    sent: int,
    started: float,
) -> dict[str, Any]:
    """Where the probe met a 429 and at what rate; waits what ``Retry-After`` says."""
    record = _near_limit(client, where, used, sent, started)
    wait = min(err.retry_after, client.settings.retry_budget_s)
    record |= {"retry_after_s": err.retry_after, "waited_s": wait}
    await asyncio.sleep(wait)
    return record


def _near_limit(
    client: AsterClient, where: Any, used: int | None, sent: int, started: float
) -> dict[str, Any]:
    """The record of where the probe met (or came near) the limit, and its rate."""
    elapsed = max(time.perf_counter() - started, 1e-9)
    return {
        "at": where if isinstance(where, str) else f"before sample {where}",
        "retry_after_s": None,
        "used_weight_reported": used,
        "limit": client.rate_limit.limit,
        "samples_sent": sent,
        "requests_per_minute": round(sent / elapsed * 60.0, 1),
        "waited_s": 0.0,
    }


def _client_recommendation(settings: Settings, met_limit: dict[str, Any] | None) -> dict[str, Any]:
    """The client settings the collection should use: the configured ones, or, after a
    429, half the configured weight share and one request in flight."""
    ex = settings.exchange
    if met_limit is None:
        return {
            "weight_safety": ex.weight_safety,
            "concurrency": ex.concurrency,
            "why": "no 429 met: the configured client",
        }
    share = ex.weight_safety * PROBE_BACKOFF_SHARE
    used, limit = met_limit.get("used_weight_reported"), met_limit.get("limit")
    if used is not None and limit:
        # below the rate the exchange pushed back at, never under a quarter of its limit
        share = min(share, max(MIN_SHARE_AFTER_429, used / limit))
    return {
        "weight_safety": round(share, 6),
        "concurrency": 1,
        "why": f"the probe met the limit ({met_limit['at']}): the collection stays below it, "
        f"at a weight share of {share:.0%}, one request at a time",
    }


def client_settings(settings: Settings, probe: dict[str, Any] | Path | None) -> Settings:
    """``settings`` with the probe's client recommendation (its document, or the file
    ``data/aster_rate_limit_test.json``) applied when the probe of the same exchange met
    the limit less than a day ago; never less cautious than the configuration."""
    doc = probe
    if isinstance(probe, Path):
        try:
            doc = json.loads(probe.read_text())
        except (OSError, ValueError):  # absent or damaged: nothing to adopt
            return settings
    rec = ((doc or {}).get("recommendations") or {}).get("client") or {}
    if not doc or doc.get("met_limit") is None or doc.get("base_url") != settings.base_url:
        return settings
    try:
        made = datetime.fromisoformat(str(doc.get("generated_at")).replace("Z", "+00:00"))
    except ValueError:
        return settings
    if (datetime.now(UTC) - made).total_seconds() > RECOMMENDATION_MAX_AGE_S:
        return settings  # an old 429 says nothing about today
    ex = settings.exchange
    update = {
        "weight_safety": min(ex.weight_safety, float(rec.get("weight_safety", ex.weight_safety))),
        "concurrency": min(ex.concurrency, int(rec.get("concurrency", ex.concurrency))),
    }
    return settings.model_copy(update={"exchange": ex.model_copy(update=update)})


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def kline_page_tiers() -> dict[str, Any]:
    """Largest ``limit`` of each klines weight tier, its weight per bar, and the best tier."""
    tiers: dict[int, int] = {}
    for limit in range(1, KLINES_MAX_LIMIT + 1):
        tiers[klines_weight(limit)] = limit  # ends at the largest limit of each weight
    rows = [
        {"limit": limit, "weight": w, "weight_per_bar": round(w / limit, 6)}
        for w, limit in sorted(tiers.items())
    ]
    best = min(rows, key=lambda r: (r["weight"] / r["limit"], -r["limit"]))
    return {
        "limit": best["limit"],
        "weight": best["weight"],
        "weight_per_bar": best["weight_per_bar"],
        "tiers": rows,
    }


def recommended_concurrency(
    rate: RateLimit, safety: float, page_weight: int, p50_ms: float | None
) -> dict[str, Any]:
    """Requests in flight that spend the weight budget at the measured median latency."""
    budget_per_s = rate.limit * safety / rate.window_s
    rps = budget_per_s / page_weight
    if p50_ms is None:
        value = MIN_CONCURRENCY
        raw = None
    else:
        raw = rps * p50_ms / 1000.0
        value = min(MAX_CONCURRENCY, max(MIN_CONCURRENCY, math.ceil(raw)))
    return {
        "value": value,
        "requests_per_second_at_budget": round(rps, 4),
        "p50_ms": p50_ms,
        "unclamped": None if raw is None else round(raw, 4),
        "formula": (
            "clamp(ceil(limit * weight_safety / window_s / page_weight * p50_s), "
            f"{MIN_CONCURRENCY}, {MAX_CONCURRENCY})"
        ),
    }


def collection_estimate(
    settings: Settings,
    rate: RateLimit,
    n_symbols: int,
    symbols_source: str,
    p50_ms: float | None = None,
) -> dict[str, Any]:
    """Weight and seconds of the configured collection at the declared limit."""
    c = settings.collect
    page = c.page_limit
    page_w = klines_weight(page)
    series = []
    kline_pages = 0
    for iv in c.intervals:
        bars = math.ceil(c.days * DAY_MS / interval_ms(iv))
        pages = math.ceil(bars / page)
        kline_pages += pages
        series.append({"interval": iv, "bars": bars, "pages": pages, "weight": pages * page_w})
    funding_rows = c.days * FUNDING_EVENTS_PER_DAY if c.funding else 0
    funding_requests = math.ceil(funding_rows / FUNDING_MAX_LIMIT) if c.funding else 0
    probes = len(c.intervals)
    per_symbol_weight = kline_pages * page_w + probes * 1 + funding_requests * 1
    per_symbol_requests = kline_pages + probes + funding_requests
    weight = n_symbols * per_symbol_weight
    requests = n_symbols * per_symbol_requests
    budget = rate.limit * settings.exchange.weight_safety
    seconds = weight / budget * rate.window_s
    latency_bound = None
    if p50_ms is not None:
        latency_bound = round(requests * p50_ms / 1000.0 / settings.exchange.concurrency, 3)
    return {
        "symbols": n_symbols,
        "symbols_source": symbols_source,
        "intervals": list(c.intervals),
        "days": c.days,
        "page_limit": page,
        "page_weight": page_w,
        "series": series,
        "first_bar_probes_per_symbol": probes,
        "funding": c.funding,
        "funding_rows_per_symbol": funding_rows,
        "funding_requests_per_symbol": funding_requests,
        "weight_per_symbol": per_symbol_weight,
        "requests": requests,
        "weight": weight,
        "seconds_at_declared_limit": round(seconds, 3),
        "seconds_at_measured_latency": latency_bound,
        "formula": (
            "weight = symbols * (sum over intervals of ceil(ceil(days * 86400000 / interval_ms) "
            "/ page_limit) * klines_weight(page_limit) + intervals * 1 [first-bar probes] "
            f"+ ceil(days * {FUNDING_EVENTS_PER_DAY} / {FUNDING_MAX_LIMIT}) * 1 [funding pages, "
            "8-hour funding assumed]); seconds_at_declared_limit = weight / (limit * "
            "weight_safety) * window_s; seconds_at_measured_latency = requests * p50_s / "
            "concurrency (a lower bound when the budget is not the bottleneck)"
        ),
    }


def _symbols_for_estimate(
    settings: Settings, info: dict[str, Any] | None
) -> tuple[int, str, str | None]:
    """(count, source, problem): trainable symbols of the discovery file, else exchangeInfo's."""
    path = DataPaths.at(settings.data_root).discovery
    problem = None
    if path.exists():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            trainable = [s for s in doc.get("symbols") or [] if s.get("trainable")]
            return len(trainable), f"trainable symbols of {path.name}", None
        except (OSError, ValueError, AttributeError) as err:
            problem = f"{path} is unreadable ({err}); the estimate counts exchangeInfo's symbols"
    symbols = [
        e for e in (info or {}).get("symbols") or [] if isinstance(e, dict) and is_perpetual(e)
    ]
    return len(symbols), "perpetual symbols of exchangeInfo", problem


# --------------------------------------------------------------------------- probe


async def probe(
    client: AsterClient,
    settings: Settings,
    *,
    samples: int = 20,
    on_sample: ProgressCallback | None = None,
    on_start: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Probe the declared limit and the server's weight header; see the module docstring.

    ``on_start(n)`` is called with the number of samples once the cap is known and
    ``on_sample(i)`` after each sample (for a progress bar).
    """
    if samples < 0:
        raise ValueError(f"samples must be >= 0, got {samples}")
    problems: list[str] = []
    started_weight = client.stats.weight

    info_resp: Response | None = None
    stopped_by: str | None = None
    rate_limited = 0
    notes: list[str] = []
    met_limit: dict[str, Any] | None = None
    wall_start = time.perf_counter()
    try:
        info_resp = await _send_once(client, "exchangeInfo")
    except RateLimited as err:
        rate_limited += 1
        stopped_by = f"HTTP 429 on exchangeInfo: {err}; the probe stopped probing at once"
        notes.append(stopped_by)
        met_limit = await _met_limit(client, "exchangeInfo", err, None, 0, wall_start)
        # the declared limit is still needed: asked again once the wait is over, by the
        # client's ordinary retrying request
        try:
            info_resp = await client.request("exchangeInfo")
        except IPBanned as banned:
            problems.append(f"HTTP 418 on exchangeInfo: {banned}")
        except ExchangeError as again:
            problems.append(f"exchangeInfo failed after the 429's wait: {again}")
    except IPBanned as err:
        stopped_by = f"HTTP 418 on exchangeInfo: {err}"
        problems.append(stopped_by)
    except ExchangeError as err:
        stopped_by = f"exchangeInfo failed: {err}"  # no limit known, nothing to measure
        problems.append(stopped_by)
    info = info_resp.data if info_resp is not None and isinstance(info_resp.data, dict) else {}
    rate_limits = info.get("rateLimits")
    try:
        rate = RateLimit.from_exchange_info(info)
        declared_rw: dict[str, Any] | None = {
            "limit": rate.limit,
            "window_seconds": rate.window_s,
            "header": rate.header,
        }
        client.set_rate_limit(rate)
    except (ValueError, KeyError, TypeError) as err:
        rate = RateLimit.default()
        declared_rw = None
        what = (
            f"exchangeInfo declares no usable REQUEST_WEIGHT limit ({err})"
            if info_resp is not None
            else "the declared limit is unknown (no exchangeInfo)"
        )
        problems.append(
            f"{what}; estimates use the documented {rate.limit} per {rate.window_s:g} s"
        )
    if info:
        client.exchange_info = info
    info_weight = info_resp.weight if info_resp is not None else 1

    # -- the budget -----------------------------------------------------------
    max_total = math.floor(rate.limit * PROBE_MAX_SHARE)
    sample_weight = 1  # time and ping
    allowed = max(0, (max_total - info_weight) // sample_weight)
    n = min(samples, allowed) if stopped_by is None else 0
    capped = n < samples
    if n == 0 and samples > 0 and stopped_by is None:
        notes.append(
            f"the declared limit ({rate.limit}) leaves no room for samples within "
            f"{PROBE_MAX_SHARE:.0%}; nothing was measured"
        )

    if on_start is not None:
        on_start(n)

    # -- the samples -----------------------------------------------------------
    latencies_ms: list[float] = []
    server_time: int | None = None
    prev_used = info_resp.used_weight if info_resp is not None else None
    headers_present = int(info_resp is not None and prev_used is not None)
    headers_missing = int(info_resp is not None and prev_used is None)
    steps_confirmed = steps_unconfirmed = resets = 0
    mismatches: list[dict[str, Any]] = []
    failures: list[str] = []
    sent = 0
    for i in range(n):
        endpoint = "time" if i % 2 == 0 else "ping"
        if prev_used is not None and prev_used + sample_weight > PROBE_STOP_SHARE * rate.limit:
            stopped_by = (
                f"the server reports {prev_used} of {rate.limit} already used on this IP; "
                f"stopped before crossing {PROBE_STOP_SHARE:.0%} of the limit"
            )
            notes.append(stopped_by)
            # someone else spends this IP's budget: as good as meeting the limit
            met_limit = _near_limit(client, i + 1, prev_used, sent, wall_start)
            break
        if client.stats.weight - started_weight + sample_weight > max_total:
            # retries count too: the probe never spends more than its share
            notes.append(f"stopped at the probe's cap of {max_total} weight (retries included)")
            break
        sent += 1
        try:
            resp = await _send_once(client, endpoint)
        except RateLimited as err:
            rate_limited += 1
            stopped_by = (
                f"HTTP 429 on sample {i + 1} ({endpoint}): {err}; the probe stopped probing at once"
            )
            notes.append(stopped_by)
            met_limit = await _met_limit(client, f"sample {i + 1} ({endpoint})", err,
                                         prev_used, sent, wall_start)  # fmt: skip
            break
        except IPBanned as err:
            stopped_by = f"HTTP 418 on sample {i + 1} ({endpoint}): {err}"
            problems.append(stopped_by)
            break
        except (RetriesExhausted, Unreachable) as err:
            # not a bad sample: the exchange stopped answering; measuring is over
            stopped_by = f"the exchange stopped answering during the probe (sample {i + 1}): {err}"
            problems.append(stopped_by)
            break
        except ExchangeError as err:
            failures.append(f"sample {i + 1} ({endpoint}): {err}")
            prev_used = None  # the chain of header values is broken
            if on_sample is not None:
                on_sample(i + 1)
            continue
        latencies_ms.append(resp.latency_s * 1000.0)
        if endpoint == "time" and isinstance(resp.data, dict) and "serverTime" in resp.data:
            server_time = int(resp.data["serverTime"])
        used = resp.used_weight
        if used is None:
            headers_missing += 1
        else:
            headers_present += 1
            if prev_used is not None:
                delta = used - prev_used
                if delta == resp.weight:
                    steps_confirmed += 1
                elif used < prev_used:
                    resets += 1
                else:
                    steps_unconfirmed += 1
                    if len(mismatches) < 10:
                        mismatches.append(
                            {
                                "sample": i + 1,
                                "endpoint": endpoint,
                                "previous": prev_used,
                                "reported": used,
                                "expected_increase": resp.weight,
                            }
                        )
        prev_used = used
        if on_sample is not None:
            on_sample(i + 1)
    wall_s = time.perf_counter() - wall_start

    if failures:
        notes.append(f"{len(failures)} sample(s) failed: " + "; ".join(failures[:5]))
    if headers_missing:
        notes.append(
            f"the used-weight header ({rate.header}) was missing on {headers_missing} response(s)"
        )
    if steps_unconfirmed:
        notes.append(
            f"{steps_unconfirmed} step(s) of the used-weight header did not match the request "
            "weights (another client on this IP, or the server counts differently)"
        )
    if n > 0 and server_time is None and stopped_by is None:
        notes.append("no /fapi/v1/time sample succeeded; server_time is unknown")

    p50 = _percentile(latencies_ms, 50)
    latency = {
        "samples": len(latencies_ms),
        "p50_ms": p50,
        "p90_ms": _percentile(latencies_ms, 90),
        "p99_ms": _percentile(latencies_ms, 99),
        "max_ms": round(max(latencies_ms), 3) if latencies_ms else None,
        "mean_ms": round(float(np.mean(latencies_ms)), 3) if latencies_ms else None,
    }
    weight_used = client.stats.weight - started_weight

    page = kline_page_tiers()
    n_symbols, source, est_problem = _symbols_for_estimate(settings, info)
    if est_problem:
        notes.append(est_problem)
    client_rec = _client_recommendation(settings, met_limit)
    recommendations = {
        "client": client_rec,
        "kline_page": page,
        "concurrency": recommended_concurrency(
            rate, settings.exchange.weight_safety, page["weight"], p50
        ),
        "collection_estimate": collection_estimate(settings, rate, n_symbols, source, p50),
    }
    if met_limit is not None:  # one recommendation, not two
        recommendations["concurrency"]["value"] = client_rec["concurrency"]

    return {
        "generated_at": utc_now_iso(),
        "base_url": client.base_url,
        "server_time": server_time,
        "server_time_iso": iso_ms(server_time),
        "asterai_version": __version__,
        "ok": not problems,
        "problems": problems,
        "notes": notes,
        "met_limit": met_limit,
        "declared": {"rate_limits": rate_limits, "request_weight": declared_rw},
        "probe": {
            "endpoints": ["time", "ping"],
            "samples_requested": samples,
            "samples_planned": n,
            "samples_sent": sent,
            "samples_capped": capped,
            "cap": (
                f"at most {PROBE_MAX_SHARE:.0%} of the declared limit: {max_total} weight, "
                f"{info_weight} of it for exchangeInfo, so {allowed} samples"
                + (f"; {samples} were asked for" if capped else "")
            ),
            "max_weight": max_total,
            "weight_used": weight_used,
            "weight_share_of_limit": round(weight_used / rate.limit, 6),
            "wall_seconds": round(wall_s, 3),
            "rate_limited": rate_limited,
            "stopped_by": stopped_by,
            "latency": latency,
            "header": {
                "name": rate.header,
                "present": headers_present,
                "missing": headers_missing,
                "confirmed_steps": steps_confirmed,
                "unconfirmed_steps": steps_unconfirmed,
                "window_resets": resets,
                "mismatches": mismatches,
                "confirmed": headers_missing == 0
                and steps_unconfirmed == 0
                and steps_confirmed > 0,
                "last_reported": prev_used,
            },
        },
        "recommendations": recommendations,
    }


def run_ratelimit_probe(
    settings: Settings, *, samples: int = 20, progress: bool = False
) -> dict[str, Any]:
    """Probe ``settings.base_url`` and write ``data/aster_rate_limit_test.json``."""

    # a probe measures; it does not wait out outages: a few retries, a short budget
    tight = settings.exchange.model_copy(
        update={
            "max_retries": min(settings.exchange.max_retries, PROBE_MAX_RETRIES),
            "retry_budget_s": min(settings.exchange.retry_budget_s, PROBE_RETRY_BUDGET_S),
        }
    )

    async def main() -> dict[str, Any]:
        async with AsterClient(settings.base_url, tight) as client:
            if not progress:
                return await probe(client, settings, samples=samples)
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            with Progress(
                TextColumn("probing rate limit"), BarColumn(), MofNCompleteColumn()
            ) as bar:
                task = bar.add_task("", total=samples)
                return await probe(
                    client,
                    settings,
                    samples=samples,
                    on_sample=lambda i: bar.update(task, completed=i),
                    on_start=lambda n: bar.update(task, total=n),
                )

    doc = asyncio.run(main())
    write_json(DataPaths.at(settings.data_root).rate_limit_test, doc)
    return doc
