# The worker image. docker-compose.yml also runs it for the one-shot topic
# creation (`python -m streams create-topics`) and for the order generator.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Faust keeps its table state in the working directory; give the
# unprivileged user a directory of its own.
RUN useradd --create-home --home-dir /app --uid 10001 crosssell
WORKDIR /app

# Only what `pip install .` needs (see .dockerignore); without the embedded broker
# (the `embedded` extra): in production the worker talks to the Kafka cluster.
COPY --chown=crosssell:crosssell . /app
RUN pip install . && rm -rf build ./*.egg-info

USER crosssell

# Faust web server: /metrics for Prometheus.
EXPOSE 6066

CMD ["python", "-m", "streams", "worker"]
