"""The test receiver is a real HTTP server: signed deliveries POSTed with httpx arrive byte for
byte and verify; it answers 500 or holds the answer past the sender's timeout on demand."""

from __future__ import annotations

import httpx
import pytest

from moorage.hooks import HEADER, push_event, render, sign, verify
from moorage.hooks.payloads import Source, Target

from .receiver import WebhookReceiver

SECRET = "receiver-test-secret-0001"


def _deliver(url: str, timeout: float = 5.0) -> httpx.Response:
    body, ctype = render(
        [push_event(Target("team/app", tag="v1"), Source("n1:5000", "n1"))], "distribution"
    )
    return httpx.post(
        url,
        content=body,
        headers={"Content-Type": ctype, HEADER: sign(SECRET, body)},
        timeout=timeout,
    )


def test_signed_delivery_arrives_and_verifies() -> None:
    with WebhookReceiver() as rx:
        assert _deliver(rx.url("/hooks/a")).status_code == 200
        (d,) = rx.wait_for(1)
        assert (d.method, d.path, d.answered) == ("POST", "/hooks/a", 200)
        assert d.headers["content-type"] == "application/vnd.docker.distribution.events.v1+json"
        assert verify(d.headers[HEADER.lower()], d.body, SECRET) > 0
        with pytest.raises(ValueError):
            verify(d.headers[HEADER.lower()], d.body + b"x", SECRET)


def test_error_answers_then_recovery() -> None:
    with WebhookReceiver() as rx:
        rx.respond_with(500, times=2)
        statuses = [_deliver(rx.url()).status_code for _ in range(3)]
        assert statuses == [500, 500, 200]
        assert [d.answered for d in rx.wait_for(3)] == [500, 500, 200]


def test_hang_makes_the_sender_time_out() -> None:
    with WebhookReceiver() as rx:
        rx.hang(seconds=10)
        with pytest.raises(httpx.ReadTimeout):
            _deliver(rx.url(), timeout=0.5)
        rx.release()
        (d,) = rx.wait_for(1)
        assert d.body  # the delivery itself arrived; only the answer was late
        assert _deliver(rx.url()).status_code == 200
