#!/usr/bin/env python3
"""What a competent user writes instead of sipgw-bulk: the benchmark's peer.

aiohttp + aiolimiter + tenacity: GET each gateway of a CSV manifest (id plus the fields
to set: uri, encryption, codecs as `A;B`), PATCH the merged full body when it differs,
retry connection errors and 5xx with exponential backoff, 64 requests at once, no rate
limit unless --rate is given, and a CSV report (id, status, changed fields).

    python3 examples/peer-python/apply.py MANIFEST.csv REPORT.csv [--concurrency 64] [--rate N]

Credentials and the space come from SIGNALWIRE_BASE_URL, SIGNALWIRE_PROJECT_ID and
SIGNALWIRE_API_TOKEN, as for sipgw-bulk. Needs `pip install aiohttp aiolimiter tenacity`.
"""

import argparse
import asyncio
import csv
import os
import sys

import aiohttp
from aiolimiter import AsyncLimiter
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

FIELDS = ("name", "uri", "encryption", "ciphers", "codecs")


class Retryable(Exception):
    """A 429, a 5xx or a connection error: worth another attempt."""


def retryable(exc):
    return isinstance(exc, (Retryable, aiohttp.ClientConnectionError, asyncio.TimeoutError))


def desired_of(row):
    want = {}
    for key, value in row.items():
        if key == "id" or value == "":
            continue
        want[key] = value.split(";") if key in ("codecs", "ciphers") else value
    return want


async def request(session, limiter, method, url, body=None):
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(retryable),
        stop=stop_after_attempt(6),
        wait=wait_exponential(multiplier=0.2, max=10) + wait_random(0, 0.2),
        reraise=True,
    ):
        with attempt:
            async with limiter:
                async with session.request(method, url, json=body) as resp:
                    if resp.status == 429 or resp.status >= 500:
                        raise Retryable(f"{method} {url}: {resp.status}")
                    resp.raise_for_status()
                    return await resp.json()


async def reconcile(session, limiter, gate, base, row):
    url = f"{base}/api/fabric/resources/sip_gateways/{row['id']}"
    async with gate:
        try:
            current = (await request(session, limiter, "GET", url))["sip_gateway"]
            merged = {f: current.get(f) for f in FIELDS}
            merged.update(desired_of(row))
            changed = [f for f in FIELDS if merged[f] != current.get(f)]
            if not changed:
                return row["id"], "unchanged", ""
            await request(session, limiter, "PATCH", url, merged)
            return row["id"], "updated", ";".join(changed)
        except Exception as exc:  # the report keeps the row; the run goes on
            return row["id"], "failed", str(exc)[:200]


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("manifest")
    parser.add_argument("report")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=None)
    args = parser.parse_args()
    base = os.environ["SIGNALWIRE_BASE_URL"].rstrip("/")
    login = (os.environ["SIGNALWIRE_PROJECT_ID"], os.environ["SIGNALWIRE_API_TOKEN"])
    if hasattr(aiohttp, "encode_basic_auth"):
        authorization = aiohttp.encode_basic_auth(*login)
    else:
        authorization = aiohttp.BasicAuth(*login).encode()
    # No rate limit by default: a limiter so wide it never waits.
    limiter = AsyncLimiter(args.rate or 1e9, 1)
    gate = asyncio.Semaphore(args.concurrency)
    with open(args.manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    headers = {"Authorization": authorization}
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        results = await asyncio.gather(*(reconcile(session, limiter, gate, base, r) for r in rows))
    with open(args.report, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "status", "changed"])
        out.writerows(results)
    failed = sum(1 for r in results if r[1] == "failed")
    print(f"{len(results)} rows, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
