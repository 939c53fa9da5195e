"""Asking another region's nodes: one read, tried at the API addresses its summary publishes.

A read about another region (its members, its leader, its placement) is answered
only there. `ask_each` tries the addresses in random order (spreading reads over
the region's published nodes), each within what is left of the caller's
deadline, marked as forwarded so that it is never forwarded again, and returns
the first answer `accept` takes, or why each address gave none.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")


async def ask_each(
    client: aiohttp.ClientSession,
    api_addrs: Sequence[str],
    path: str,
    accept: Callable[[Any], T | None],
    *,
    header: str,
    deadline_s: float,
    timeout_s: float,
    params: Mapping[str, str] | None = None,
    refused: str = "not the answer asked for",
    method: str = "GET",
    data: bytes | None = None,
) -> tuple[T | None, list[str]]:
    """(the first answer `accept` returns non-None for, []) or (None, why each address gave none).

    deadline_s is on the running loop's clock; each try gets at most timeout_s of it.
    `refused` says why an answer `accept` rejected does not do (e.g. a stale summary).
    `method` and `data`: a read that needs a body (POST /v1/plan) sends it to each address.
    """
    order = list(api_addrs)
    random.shuffle(order)
    loop = asyncio.get_running_loop()
    failures: list[str] = []
    for api in order:
        left_s = deadline_s - loop.time()
        if left_s <= 0:
            failures.append(f"{api}: not tried (out of time)")
            continue
        try:
            async with client.request(
                method,
                f"http://{api}{path}",
                params=params,
                data=data,
                headers={header: "1", **({"Content-Type": "application/json"} if data is not None else {})},
                timeout=aiohttp.ClientTimeout(total=min(timeout_s, left_s)),
            ) as resp:
                if resp.status != 200:
                    failures.append(f"{api}: HTTP {resp.status}")
                    continue
                body = await resp.json()
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError, ValueError) as exc:
            failures.append(f"{api}: {type(exc).__name__}")
            continue
        answer = accept(body)
        if answer is not None:
            return answer, []
        failures.append(f"{api}: {refused}")
    return None, failures
