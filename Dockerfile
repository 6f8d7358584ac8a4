# Natter: natter-api + natter-worker on Debian 12 (the distribution the code is developed on).
#   docker build -t natter .
#   docker run --rm natter --help            # natter-api; `migrate` applies migrations
#   docker run --rm --entrypoint natter-worker natter
# See docker-compose.yml for a complete stack (PostgreSQL 15, Redis 7, migrate, api, worker).

FROM debian:12-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config xz-utils patch \
      libpq-dev libhiredis-dev libjansson-dev libjwt-dev \
      libsodium-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
COPY . /src
# .dockerignore keeps local build output, dev state (.state/: secrets, database) and
# .git out of the context; the rm below is a second guard for a context built without it.
RUN rm -rf /src/build /src/build-asan /src/.state /src/.cache \
 && make -C /src

FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libpq5 libhiredis0.14 libjansson4 libjwt0 libsodium23 libcurl4 \
      ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin natter \
 && mkdir -p /var/lib/natter/blobs && chown -R natter:natter /var/lib/natter
COPY --from=build /src/build/natter-api /src/build/natter-worker /usr/local/bin/
USER natter
# NATTER_WORKER_LISTEN: natter-worker's operator listener (/metrics, /healthz, /readyz)
ENV NATTER_ENV=production NATTER_LISTEN_ADDR=0.0.0.0 NATTER_STATE_DIR=/var/lib/natter \
    NATTER_WORKER_LISTEN=0.0.0.0:8081
# 8080: natter-api; 8081: natter-worker's operator listener
EXPOSE 8080 8081
ENTRYPOINT ["natter-api"]
