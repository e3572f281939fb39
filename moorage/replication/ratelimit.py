"""A token-bucket bandwidth limit shared by the transfers of one execution.

Every transfer calls :meth:`BandwidthLimiter.acquire` with the bytes it is about to move; the
bucket refills at ``bytes_per_second`` up to ``burst`` bytes. A caller may take more than is in
the bucket (a 1 MiB chunk when 200 KiB are left): the bucket goes into debt and that caller sleeps
the debt off while holding the lock, so waiting transfers are served in order and the long-run
rate is exact whatever the chunk sizes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class BandwidthLimiter:
    def __init__(
        self,
        bytes_per_second: float,
        burst: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be positive")
        self.rate = float(bytes_per_second)
        # One second's worth by default, at least 64 KiB so tiny limits still move whole reads.
        self.burst = float(burst if burst is not None else max(self.rate, 65536.0))
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()
        self._lock = asyncio.Lock()

    async def acquire(self, n: int) -> None:
        """Wait until *n* bytes may be moved."""
        if n <= 0:
            return
        async with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            if self._tokens < 0:
                await self._sleep(-self._tokens / self.rate)
