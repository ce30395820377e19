# syntax=docker/dockerfile:1
# stockcast: non-root, store and data as volumes. Two targets:
#   serve  the API and an inference process on ONNX Runtime, no TensorFlow (API replicas)
#   train  everything: CPU-only TensorFlow for training and for versions without model.onnx
#          (queue workers, the embedded mode); the default, as the last stage.
FROM python:3.11-slim-bookworm AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    STOCKCAST_HOST=0.0.0.0 \
    STOCKCAST_PORT=8000 \
    STOCKCAST_MODELS_DIR=/srv/stockcast/models \
    STOCKCAST_DATA_DIR=/srv/stockcast/var \
    STOCKCAST_SAMPLE_DATA=/app/data/sample/msft.csv

WORKDIR /app

RUN groupadd --system --gid 10001 stockcast \
    && useradd --system --uid 10001 --gid stockcast --home-dir /app --shell /usr/sbin/nologin stockcast

# Runtime dependencies only (no dev extras): copied first so code edits keep this layer cached.
COPY pyproject.toml README.md ./
COPY app/__init__.py app/__init__.py
COPY training/__init__.py training/__init__.py
RUN pip install --no-cache-dir .

FROM base AS serve
COPY app ./app
COPY training ./training
COPY data/sample ./data/sample
RUN pip install --no-cache-dir --no-deps . \
    && mkdir -p /srv/stockcast/models /srv/stockcast/var \
    && chown -R stockcast:stockcast /srv/stockcast

USER 10001:10001
VOLUME ["/srv/stockcast/models", "/srv/stockcast/var"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=3s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status != 200)"]

# Serves what the store holds; without TensorFlow it never trains the sample model.
CMD ["python", "-m", "app"]

FROM base AS train
# TensorFlow, Keras and the ONNX converter: a layer of its own, before the code.
RUN pip install --no-cache-dir "./[train]"
COPY app ./app
COPY training ./training
COPY data/sample ./data/sample
RUN pip install --no-cache-dir --no-deps . \
    && mkdir -p /srv/stockcast/models /srv/stockcast/var \
    && chown -R stockcast:stockcast /srv/stockcast

USER 10001:10001
VOLUME ["/srv/stockcast/models", "/srv/stockcast/var"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=3s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status != 200)"]

# Trains the sample model on first start when the store volume is empty, then serves.
CMD ["python", "-m", "app"]
