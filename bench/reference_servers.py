"""The two reference servers `bench/serve.py` compares the service with.

    .venv/bin/python bench/reference_servers.py tutorial --port 8101 --models-dir DIR --model msft
    .venv/bin/python bench/reference_servers.py constant --port 8102

- `tutorial`: the FastAPI + Keras service of a typical tutorial. It loads the
  same stored version with the same preprocessing, and each request calls
  `model.predict()` inside an `async def` route (the common pattern, which
  also blocks the event loop while it runs).
- `constant`: accepts the same POST, reads the body and returns a fixed
  forecast without parsing or computing anything: the HTTP ceiling of
  FastAPI + uvicorn on this machine.

Both answer `GET /health` and `POST /predict` with the service's request body.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response

CONSTANT_BODY = b'{"model":"msft","version":1,"label":"close","forecast":[{"step":1,"close":84.0}]}'


def tutorial_app(models_dir: Path, name: str) -> FastAPI:
    """model.predict() per request, the way most FastAPI + Keras tutorials serve a model."""
    import numpy as np

    from training.artifact import load_version
    from training.store import ModelStore

    store = ModelStore(models_dir)
    loaded = load_version(store, name, store.versions(name)[-1])
    app = FastAPI(title="tutorial-style reference")

    @app.get("/health")
    async def read_health() -> dict[str, str]:
        """Liveness."""
        return {"status": "ok"}

    @app.post("/predict")
    async def create_prediction(body: dict[str, Any]) -> dict[str, Any]:
        """One window in, model.predict() on it, forecast out."""
        window = np.asarray(body["window"], dtype=np.float64)[None, :, :]
        prices = loaded.predict_prices(window)[0]
        forecast = [{"step": step + 1, "close": float(value)} for step, value in enumerate(prices)]
        return {"model": loaded.name, "version": loaded.version, "forecast": forecast}

    return app


def constant_app() -> FastAPI:
    """The same route returning a fixed answer: what FastAPI + uvicorn can do at best."""
    app = FastAPI(title="constant reference")

    @app.get("/health")
    async def read_health() -> dict[str, str]:
        """Liveness."""
        return {"status": "ok"}

    @app.post("/predict")
    async def create_prediction(request: Request) -> Response:
        """Read the body, answer a constant."""
        await request.body()
        return Response(CONSTANT_BODY, media_type="application/json")

    return app


def main() -> None:
    """Serve one reference app on loopback until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["tutorial", "constant"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--models-dir", type=Path, help="store holding the model (tutorial only)")
    parser.add_argument("--model", default="msft", help="model name (tutorial only)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import uvicorn

    if args.kind == "tutorial":
        if args.models_dir is None:
            parser.error("tutorial needs --models-dir")
        app = tutorial_app(args.models_dir, args.model)
    else:
        app = constant_app()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
