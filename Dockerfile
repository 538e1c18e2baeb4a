# One image for every emporium process: `emporium actor NAME`, `emporium edge`,
# `emporium payment-provider` (compose.yaml and ops/k8s choose the command). No HEALTHCHECK here:
# compose and Kubernetes probe each process's own /health and /ready.

FROM python:3.11-slim AS build
# A virtual environment is a directory the runtime stage can copy whole, without pip, uv or build
# tools. uv makes it from uv.lock, as ops/dev.sh makes the one CI tests in (the same UV_VERSION).
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PROJECT_ENVIRONMENT=/opt/emporium UV_PYTHON_DOWNLOADS=never UV_NO_CACHE=1 UV_COMPILE_BYTECODE=1
RUN pip install uv==0.13.9
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY actors ./actors
COPY brokers ./brokers
COPY edge ./edge
COPY ops ./ops
# The locked runtime set only (no test extra, no embedded MongoDB), never re-resolved (--locked stops
# when uv.lock does not match pyproject.toml), then the package itself, not editable: /src stays here.
RUN uv sync --locked --no-editable --python /usr/local/bin/python

FROM python:3.11-slim
ENV PATH=/opt/emporium/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A numeric user, so Kubernetes can verify runAsNonRoot without resolving a name.
RUN groupadd --system --gid 10001 emporium \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin emporium
COPY --from=build /opt/emporium /opt/emporium
USER 10001:10001
WORKDIR /tmp
# 8080: an actor's /health, /ready, /metrics; 8000: the edge; 8090: the payment-provider simulator.
EXPOSE 8000 8080 8090
ENTRYPOINT ["emporium"]
CMD ["--help"]
