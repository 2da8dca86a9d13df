"""Many simulated phones talking to the gateway at once, as ``hadir replay`` and ``hadir bench``
need them: register one phone per (NIP, device) pair, then send check-ins through the edge, each
phone's in order (one NIP's check-ins stay in order on the raw topic, as from a real phone), many
phones at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp

from hadir import devices
from hadir.config import Settings
from hadir.phone import Phone, gateway_url

CONCURRENCY = 32  # requests in flight: enough to keep the edge busy, few enough for 2 cores
RETRIES = 10  # of a request answered 429 or 503, after its Retry-After (at most 5 s)


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]


def register(settings: Settings, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Phone]:
    """A registered phone for each (NIP, device_id) whose NIP is on the employees reference
    data; the others get a phone without a key (the edge will answer it 401, as it would a
    phone that never got an activation code)."""
    wanted = list(dict.fromkeys(pairs))
    phones = {pair: Phone(*pair) for pair in wanted}
    known = devices.employed(settings, {nip for nip, _ in wanted})
    registrable = [pair for pair in wanted if pair[0] in known]
    codes = devices.issue_codes(settings, [nip for nip, _ in registrable])

    async def run() -> None:
        async with _session() as session:
            async def one(pair: tuple[str, str], code: str) -> None:
                body = phones[pair].registration(code)
                async with session.post(gateway_url(settings) + "/v1/devices",
                                        data=body) as r:
                    answer = await r.json()
                    if r.status != 201:
                        raise RuntimeError(f"registering {pair}: HTTP {r.status} {answer}")
                    phones[pair].key_id = answer["key_id"]

            await _bounded([one(pair, c["code"]) for pair, c in zip(registrable, codes,
                                                                    strict=True)])

    asyncio.run(run())
    return phones


def send(settings: Settings, requests: list[tuple[Phone, bytes]], import_token: str = "",
         path: str = "/v1/checkins") -> list[Answer]:
    """``POST path`` (check-ins unless told) for each (phone, body), in order per phone,
    phones in parallel; the answers in the order of ``requests``."""
    answers: list[Answer | None] = [None] * len(requests)
    queues: dict[str, list[int]] = {}
    for i, (phone, _) in enumerate(requests):
        queues.setdefault(phone.nip, []).append(i)
    url = gateway_url(settings) + path

    async def run() -> None:
        async with _session() as session:
            async def phone_queue(indexes: list[int]) -> None:
                for i in indexes:
                    phone, body = requests[i]
                    headers = phone.headers("POST", path, body, import_token)
                    for attempt in range(RETRIES + 1):  # as a phone keeps a 503 queued
                        async with session.post(url, data=body, headers=headers) as r:
                            answers[i] = Answer(r.status, await r.json())
                            wait = min(float(r.headers.get("Retry-After", 1)), 5.0)
                        if r.status not in (429, 503) or attempt == RETRIES:
                            break
                        await asyncio.sleep(wait)

            await _bounded([phone_queue(q) for q in queues.values()])

    asyncio.run(run())
    return [a for a in answers if a is not None]


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY),
                                 timeout=aiohttp.ClientTimeout(total=120))


async def _bounded(jobs: list[Any]) -> None:
    """Run the coroutines, CONCURRENCY at a time."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def gated(job: Any) -> None:
        async with gate:
            await job

    await asyncio.gather(*(gated(j) for j in jobs))
