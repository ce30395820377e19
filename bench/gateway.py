"""What the gateway middleware costs per request, in process: with keys and metrics, without, and no gateway.

    .venv/bin/python bench/gateway.py [--requests 20000] [--rounds 5] [--json OUT]

`bench/serve.py` measures the same thing end to end (service vs
service-open), but on two shared cores its throughput figures drift by more
than the few microseconds at stake. Here one event loop drives three ASGI
stacks with the same POST /predict request (a 40-row window as arrays, as
wrk sends it) and an app behind them that answers at once, so the only
difference between them is the gateway (`app/api/gateway.py`):

- `bare`: the answering app alone;
- `gateway-open`: the gateway without keys (open on loopback) and with
  STOCKCAST_METRICS=false: request id and limits only;
- `gateway`: the gateway as deployed: a keys file, the bearer key sent and
  checked, metrics counted (access log off in all three, as in bench/serve.py).

The stacks take turns for `--rounds` rounds; the median CPU microseconds
(process time, which a descheduled process does not accumulate) per request
of each is printed, and the gateway's cost as a difference from
`bare` and as a share of the API process's CPU per /predict
(`--predict-cpu-us`, default 160: `bench/request_steps.py` on this machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from harness import add_json_option, write_json
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from app.api.asgi import JsonAnswer
from app.api.gateway import DirectRoute, Gateway
from app.core.config import Settings
from app.core.keys import create_key

BODY = json.dumps({"model": "msft", "window": [[83.0, 84.0, 82.5, 83.5, 2.1e7]] * 40}).encode()
ANSWER = b'{"model":"msft","version":1}'


async def answer_directly(scope: Scope, path: Mapping[str, str | None], raw: bytes) -> Response:
    """A fixed answer, as the gateway gives /predict from its table of direct answers."""
    return JsonAnswer(ANSWER)


async def answering_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the body and answers 200 at once: what is left of a request without the service's work."""
    while (await receive()).get("more_body", False):
        pass
    headers = [(b"content-length", str(len(ANSWER)).encode()), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


DIRECT = (DirectRoute(re.compile("/predict"), answer_directly),)


def routes_app() -> FastAPI:
    """An app whose OpenAPI document has /predict, for the gateway's route labels."""
    app = FastAPI()

    @app.post("/predict")
    def create_prediction() -> None:
        """Forecast."""

    return app


async def drive(stack: Any, headers: list[tuple[bytes, bytes]], requests: int, labels: FastAPI) -> float:
    """CPU microseconds per request over `requests` sequential requests through `stack`."""
    scope_headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
        *headers,
    ]

    async def receive() -> Message:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: Message) -> None:
        return None

    # CPU time, not wall time: on shared cores the process is descheduled for longer than the gateway runs.
    started = time.process_time()
    for _ in range(requests):
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/predict",
            "root_path": "",
            "headers": scope_headers,
            "client": ("127.0.0.1", 50000),
            "app": labels,
        }
        await stack(scope, receive, send)
    return (time.process_time() - started) / requests * 1e6


async def measure(requests: int, rounds: int) -> dict[str, list[float]]:
    """Each stack's microseconds per request, per round."""
    labels = routes_app()
    with tempfile.TemporaryDirectory(prefix="stockcast-gateway-") as temporary:
        folder = Path(temporary)
        keys_file = folder / "api_keys.json"
        key = create_key(keys_file, "bench", "predict")
        common: dict[str, Any] = {"data_dir": folder, "access_log": False, "host": "127.0.0.1"}
        deployed = Settings(**common, api_keys_file=keys_file, metrics=True)
        open_settings = Settings(**common, api_keys_file=folder / "none.json", metrics=False)
        stacks = {
            "bare": (answering_app, []),
            # As in the service: the gateway answers POST /predict itself (`direct`).
            "gateway-open": (Gateway(answering_app, open_settings, direct=DIRECT), []),
            "gateway": (
                Gateway(answering_app, deployed, direct=DIRECT),
                [(b"authorization", f"Bearer {key}".encode())],
            ),
        }
        results: dict[str, list[float]] = {name: [] for name in stacks}
        for stack, headers in stacks.values():  # warm-up: caches, labels, the keys file's first read
            await drive(stack, headers, 500, labels)
        for _ in range(rounds):
            for name, (stack, headers) in stacks.items():
                results[name].append(await drive(stack, headers, requests, labels))
    return results


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per stack and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, the stacks taking turns (median reported)")
    parser.add_argument("--predict-cpu-us", type=float, default=160.0, help="API CPU per /predict to compare with")
    add_json_option(parser)
    args = parser.parse_args()
    results = asyncio.run(measure(args.requests, args.rounds))
    medians = {name: statistics.median(values) for name, values in results.items()}
    print(f"{args.requests} requests per stack and round, {args.rounds} rounds, median us/request:")
    for name, value in medians.items():
        spread = f"{min(results[name]):.1f}-{max(results[name]):.1f}"
        print(f"  {name:14s} {value:7.1f} us  (rounds {spread})")
    for name in ("gateway-open", "gateway"):
        cost = medians[name] - medians["bare"]
        share = cost / args.predict_cpu_us
        print(f"{name}: +{cost:.1f} us a request = {share:.1%} of {args.predict_cpu_us:.0f} us of API CPU per /predict")
    keys_and_metrics = medians["gateway"] - medians["gateway-open"]
    print(
        f"keys + metrics alone: +{keys_and_metrics:.1f} us = {keys_and_metrics / args.predict_cpu_us:.1%} "
        "(goal of issue 16: under 5 %)"
    )
    write_json(
        args.json,
        sys.argv,
        {
            "requests": args.requests,
            "rounds": results,
            "median_us_per_request": medians,
            "keys_and_metrics_us": keys_and_metrics,
            "predict_cpu_us": args.predict_cpu_us,
        },
    )


if __name__ == "__main__":
    main()
