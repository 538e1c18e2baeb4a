# One image for every emporium process: `emporium actor NAME`, `emporium edge`,
# `emporium payment-provider` (compose.yaml and ops/k8s choose the command). No HEALTHCHECK here:
# compose and Kubernetes probe each process's own /health and /ready.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# A virtual environment is a directory the runtime stage can copy whole, without pip or build tools.
RUN python -m venv /opt/emporium
COPY pyproject.toml README.md ./
COPY actors ./actors
COPY brokers ./brokers
COPY edge ./edge
COPY ops ./ops
# The package and its runtime dependencies only: no test extra, no embedded MongoDB.
RUN /opt/emporium/bin/pip install .

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
