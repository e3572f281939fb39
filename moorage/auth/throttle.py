"""Login throttling for passwords: slow guessing down without letting anyone lock anyone out.

The policy (docs/security.md, "Login throttling"):

- Only *passwords* are counted. Robot secrets and personal access tokens are 256-bit random
  strings that nobody can guess online: they are never counted nor throttled, so an outsider
  cannot stop a CI pipeline by failing logins with its robot's name.
- Failures are counted per account *from one client address* (``pair:``), per account from
  anywhere (``acct:``) and per client address (``addr:``), each in a ``window``.
- A key past its limit is *throttled*, never locked: one password check per ``duration``
  seconds is still made, and a correct password then succeeds. Attempts in between are answered
  429 with ``Retry-After`` without being checked.
- Which keys apply to an attempt: its own ``pair:`` key always (a client address that keeps
  failing for one account); the ``acct:`` and ``addr:`` keys only when the account has not
  logged in successfully from this address within ``REMEMBER`` (a ``good:`` mark), and the
  ``acct:`` key only once this address has itself failed for the account. So guesses from
  elsewhere — other addresses, a botnet, an address spraying many names — never slow down the
  account's owner at an address they have used before, nor at a new address before it failed.
- Checks of one account are serialized per process (``gate``): parallel guesses cannot all slip
  under a limit while the first ones are being verified, and a client sending the same correct
  credentials on 32 connections at once pays one argon2 verification; the others find it in
  the verification cache (moorage.auth.passwords) instead of drawing a spurious 429.

The addresses are the clients' own when ``http.trusted_proxies`` names the proxies in front
(moorage.proxies); without it every client behind a proxy shares the proxy's address, and the
``addr:`` limit then applies to all of them together.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from ..db import access_queries as aq
from ..db.engine import reader
from ..db.queries import now
from .config import LockoutConfig

REMEMBER = timedelta(days=30)  # how long a successful (account, address) pair is remembered


class Throttled(Exception):
    """Too many failures: this attempt is not checked; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("too many failed logins; try again later")
        self.retry_after = retry_after


class LoginThrottle:
    def __init__(self, write_engine: AsyncEngine, config: LockoutConfig) -> None:
        self.engine = write_engine
        self._read = reader(write_engine)  # built once: the same pool, never the write lock
        self.config = config
        self._gates: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def gate(self, account: str) -> AsyncIterator[None]:
        """One password check at a time per account in this process."""
        lock, users = self._gates.get(account, (asyncio.Lock(), 0))
        self._gates[account] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._gates[account]
            if users <= 1:
                del self._gates[account]
            else:
                self._gates[account] = (lock, users - 1)

    @staticmethod
    def keys(account: str, client: str) -> dict[str, str]:
        return {
            "pair": f"pair:{account}@{client}",
            "acct": f"acct:{account}",
            "addr": f"addr:{client}",
            "good": f"good:{account}@{client}",
        }

    async def admit(self, account: str, client: str) -> None:
        """Raise Throttled when this attempt may not be checked now."""
        throttled, rows = await self.throttled_keys(account, client)
        if throttled:
            await self.claim(throttled, rows)

    async def throttled_keys(
        self, account: str, client: str
    ) -> tuple[list[str], dict[str, aq.CounterRow]]:
        """The keys past their limit that apply to this attempt (none: check freely)."""
        k = self.keys(account, client)
        lo = self.config
        ts = now()
        window = timedelta(seconds=lo.window)
        async with self._read.connect() as conn:
            rows = await aq.counters(conn, list(k.values()))

        def failures(name: str) -> int:
            row = rows.get(k[name])
            return row.count if row is not None and row.window_start > ts - window else 0

        good = rows.get(k["good"])
        known = good is not None and good.window_start > ts - REMEMBER
        pair = failures("pair")
        throttled = []
        if pair >= lo.account_limit:
            throttled.append(k["pair"])
        if not known:
            if pair > 0 and failures("acct") >= lo.account_limit:
                throttled.append(k["acct"])
            if failures("addr") >= lo.address_limit:
                throttled.append(k["addr"])
        return throttled, rows

    async def claim(self, throttled: list[str], rows: dict[str, aq.CounterRow]) -> None:
        """Take the one check allowed per ``duration`` on every throttled key, or raise."""
        interval = timedelta(seconds=self.config.duration)
        async with self.engine.begin() as conn:  # all slots or none (the raise rolls back)
            for key in throttled:
                if not await aq.claim_check_slot(conn, key, interval):
                    raise Throttled(self._retry_after(rows, throttled))

    def _retry_after(self, rows: dict[str, aq.CounterRow], keys: list[str]) -> int:
        ts = now()
        waits = []
        for k in keys:
            at = rows[k].next_check_at if k in rows else None
            if at is not None:
                waits.append((at - ts).total_seconds())
        return max(1, math.ceil(max(waits, default=float(self.config.duration))))

    async def failed(self, account: str, client: str) -> None:
        k = self.keys(account, client)
        window = timedelta(seconds=self.config.window)
        async with self.engine.begin() as conn:
            for name in ("pair", "acct", "addr"):
                await aq.count_failure(conn, k[name], window)

    async def succeeded(self, account: str, client: str) -> None:
        """The pair's failures are forgotten and the pair remembered; the account's and the
        address's counts stay (they are about other attempts)."""
        k = self.keys(account, client)
        async with self.engine.begin() as conn:
            await aq.clear_failures(conn, k["pair"])
            await aq.mark_good(conn, k["good"])
