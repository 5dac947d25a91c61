"""The stand-in exchange: an Aster-compatible server (loopback) that replays a recorded
folder.

It serves the public market-data endpoints of ``/fapi/v1`` with the real
exchange's paths, parameters, JSON shapes, request weights, used-weight
header, 429 and 418 rules, from real recorded data only (see
:mod:`asterai.exchange.replay.recording`). Its clock is frozen at the recording time,
so ``GET /fapi/v1/time`` says when the recording was taken and the last bar
of each series is served as the exchange's current, still-open bar; or it plays
the recording forward as if live (a running clock, bars closing on it, and the
exchange's websocket kline streams pushing each bar as it closes).

Built on the standard library (``http.server``, HTTP/1.1 keep-alive with
``Content-Length``) so faults can be made on the raw socket: 5xx errors,
spurious 429 bursts, slow answers, truncated bodies and dropped connections,
drawn from a seeded ``random.Random`` (see :class:`FaultSpec`).

What the replay cannot know, it does not invent:

* Symbol facts: a symbol listed in the recording's own ``exchangeInfo.json``
  is served with that entry verbatim. Otherwise only ``PRICE_FILTER.tickSize``
  and ``LOT_SIZE.stepSize`` (gcd of every recorded price and base quantity,
  klines included) are declared; ``MIN_NOTIONAL``, ``status``,
  ``onboardDate`` and funding caps are left out.
* Kline fields that were not recorded (trades, taker-buy quote volume, the
  ignored field in the shared recording) are JSON ``null``.
* ``GET /fapi/v1/depth`` and ``GET /fapi/v1/trades`` for a known symbol
  without a recorded book or trades file answer HTTP 404 with
  ``{"code": -1000, "msg": "No order book recorded for SYMBOL in this replay."}``
  (or "No trades recorded ..."), rather than an empty, made-up answer.
* ``ticker/24hr`` is computed from the symbol's finest recorded klines (1h in
  the shared recording); ``count``, ``firstId`` and ``lastId`` are ``null``
  and ``lastQty`` is the recorded last trade's quantity or ``null``.

Rate limits follow the exchange: fixed windows aligned to wall-clock time,
weight per request from :func:`asterai.exchange.weights.endpoint_weight`,
HTTP 429 with ``Retry-After`` when a request would cross the limit (it is
then not counted), and an HTTP 418 ban for a client that sends more than
``ban_after`` further requests in the same window after a 429. Every response
carries ``X-MBX-USED-WEIGHT-1M`` (or ``-{n}S`` for a shortened window, as
declared in ``exchangeInfo.rateLimits``).

The package, one file for each part, each importing only the ones it needs and never
this ``__init__`` (no circle; ``tests/test_architecture.py`` checks it):

* ``recording.py``: a recorded folder (either layout) loaded into memory, ready to serve.
* ``series.py``: the recording's series (klines, funding) and the symbol facts they
  imply (``SymbolInfo``: the recorded filters, or the tick and step derived).
* ``faults.py``: :class:`FaultSpec`, the share of requests that get each fault.
* ``stats.py``: :class:`ReplayStats`, what the server did, counted.
* ``clock.py``: :class:`PlayClock`, the running clock of a recording played forward.
* ``limits.py``: the server's request-weight rule (``WeightLimiter``): the windows,
  the 429 and the 418 ban.
* ``errors.py``: ``ApiError`` and the helpers that build the exchange's documented
  error bodies.
* ``market.py``: the request-handling application (``Replay``) for the public
  market-data endpoints, independent of the socket layer: one method a route.
* ``http.py``: the socket layer: each request's fault, the weight rule, the answer.
* ``streams.py``: the websocket kline streams of a played-forward recording.
* ``accounts.py``: what the accounts hold, in the exchange's decimals: instruments
  (a symbol's filters and recorded market), orders, positions, accounts.
* ``matching.py``: the matching engine, order by order over the recording as the
  clock plays (``Engine``).
* ``auth.py``: who may act on which account: V3 signatures and nonces, V1 keys,
  HMAC and timestamps; throwaway accounts' keys.
* ``account_api.py``: the private endpoints (``AccountAPI``): signed requests onto
  the engine, order counts, listen keys.
* ``server.py``: :class:`ReplayServer` (the REST server and the streams, started and
  stopped) and :func:`serve` (the ``asterai replay`` command).

This ``__init__`` only re-exports the names the rest of the code uses.
"""

from __future__ import annotations

from asterai.exchange.replay.clock import PlayClock
from asterai.exchange.replay.faults import FaultSpec
from asterai.exchange.replay.server import ReplayServer, serve
from asterai.exchange.replay.stats import ReplayStats

__all__ = ["FaultSpec", "PlayClock", "ReplayServer", "ReplayStats", "serve"]
