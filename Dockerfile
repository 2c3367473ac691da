# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build -t likeness .                      slim: remote providers only, no torch (the default)
#   docker build --target local -t likeness:local .  local: adds the PuLID-FLUX engine (CUDA torch, the
#                                                    `local` and `gpu` extras: timm, facexlib, torchvision)
# Both run `likeness` as an unprivileged user with their state in the /data volume.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtual environment with the package, copied whole into the runtime images ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/likeness
ENV PATH=/opt/likeness/bin:$PATH
WORKDIR /src
# Metadata first: the dependency layer is reused while only the code changes.
COPY pyproject.toml README.md ./
RUN mkdir bot engine storage \
    && touch bot/__init__.py engine/__init__.py storage/__init__.py \
    && pip install . \
    && pip uninstall --yes likeness \
    && rm -rf bot engine storage build likeness.egg-info
COPY bot ./bot
COPY engine ./engine
COPY storage ./storage
RUN pip install --no-deps .

# ---- build-local: the same plus the local engine's extras ----
FROM build AS build-local
# insightface ships only as source: it needs a C++ compiler to build.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN pip install ".[local,gpu]"

# ---- runtime: what both images share ----
FROM ${PYTHON_IMAGE} AS runtime
# tini runs as PID 1 so SIGTERM from `docker stop` reaches likeness and it shuts down cleanly.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home likeness \
    && mkdir -p /data /models \
    && chown likeness:likeness /data /models
ENV PATH=/opt/likeness/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LIKENESS_DATA_DIR=/data
# /app stays empty: settings come from the environment (a .env file here would be read too).
WORKDIR /app
VOLUME ["/data"]
EXPOSE 9464
ENTRYPOINT ["tini", "--", "likeness"]
CMD ["run"]

# ---- local: the GPU image ----
FROM runtime AS local
# OpenCV (face alignment) and the OpenMP runtime of onnxruntime load these system libraries.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends libglib2.0-0 libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build-local /opt/likeness /opt/likeness
ENV LIKENESS_LOCAL__MODELS_DIR=/models \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER likeness

# ---- slim: the default image, remote providers only ----
FROM runtime AS slim
COPY --from=build /opt/likeness /opt/likeness
USER likeness
