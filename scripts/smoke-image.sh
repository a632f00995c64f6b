#!/usr/bin/env bash
# Build the digest image and smoke-run it: `digest db upgrade`, then `digest serve` on SQLite in a
# throwaway volume; /healthz must answer 200, Docker's HEALTHCHECK must report healthy, and
# `docker stop` must end the daemon with exit code 0. Exits non-zero, saying why, on any failure.
#
#   scripts/smoke-image.sh                                      # FROM python:3.12-slim
#   BASE=local/python:3.11-bookworm scripts/smoke-image.sh      # FROM a locally made base
#
# Settings: BASE (the image to build FROM), PORT (where the daemon listens on the host network,
# default 18000 so a digest already on 8000 is left alone), TAG (default digest:smoke).
#
# Where Docker Hub cannot be reached, make a stand-in for python:3.12-slim first, as root:
#   apt-get install debootstrap docker.io && scripts/make-local-base.sh
# which amounts to
#   debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
#     bookworm /tmp/rootfs http://deb.debian.org/debian
#   tar -C /tmp/rootfs -c . | docker import - local/python:3.11-bookworm
# The build and the container use the host's network (--network host), so an engine started
# without a bridge (dockerd --iptables=false --bridge=none) is enough.
set -euo pipefail

BASE=${BASE:-python:3.12-slim}
PORT=${PORT:-18000}
TAG=${TAG:-digest:smoke}
NAME=digest-smoke-$$
VOLUME=digest-smoke-data-$$
HEALTH_WAIT=60   # seconds for /healthz to answer 200
STATUS_WAIT=90   # seconds for Docker's health status to turn healthy (checks run every 15 s)

cd "$(dirname "$0")/.."

fail() {
  echo "smoke: FAILED: $*" >&2
  if docker container inspect "$NAME" >/dev/null 2>&1; then
    echo "smoke: last lines of the container's log:" >&2
    docker logs --tail 40 "$NAME" >&2 2>&1 || true
  fi
  exit 1
}

cleanup() {
  docker rm -f "$NAME" >/dev/null 2>&1 || true
  docker volume rm "$VOLUME" >/dev/null 2>&1 || true
}
trap cleanup EXIT

command -v docker >/dev/null || fail "docker is not installed"
command -v curl >/dev/null || fail "curl is not installed (the smoke test asks /healthz with it)"
docker info >/dev/null 2>&1 || fail "no Docker engine answers (start dockerd first)"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  fail "something already listens on port $PORT; run with PORT=<a free port>"
fi

echo "== build $TAG from $BASE"
started=$SECONDS
docker build --network host --build-arg "BASE=$BASE" -t "$TAG" . || fail "docker build failed"
echo "== built in $((SECONDS - started)) s"

echo "== run $NAME on port $PORT (SQLite in volume $VOLUME)"
docker volume create "$VOLUME" >/dev/null
secret=$(head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n')
docker run -d --name "$NAME" --network host \
  -v "$VOLUME:/data" \
  -e "PORT=$PORT" \
  -e "DIGEST_BASE_URL=http://127.0.0.1:$PORT" \
  -e "DIGEST_SECRET_KEY=$secret" \
  -e "DIGEST_SENDER=Smoke Test <digest@example.org>" \
  -e "DIGEST_SMTP_HOST=127.0.0.1" \
  "$TAG" >/dev/null || fail "docker run failed"

echo "== wait up to ${HEALTH_WAIT} s for GET /healthz to answer 200"
deadline=$((SECONDS + HEALTH_WAIT))
code=000
until [ "$code" = 200 ]; do
  [ "$(docker inspect -f '{{.State.Running}}' "$NAME")" = true ] \
    || fail "the container stopped before /healthz answered (exit code $(docker inspect -f '{{.State.ExitCode}}' "$NAME"))"
  [ "$SECONDS" -lt "$deadline" ] || fail "/healthz did not answer 200 within ${HEALTH_WAIT} s (last status: $code)"
  sleep 1
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://127.0.0.1:$PORT/healthz" || true)
done
echo "GET /healthz -> $code $(curl -sS --max-time 3 "http://127.0.0.1:$PORT/healthz")"

echo "== wait up to ${STATUS_WAIT} s for Docker's health status to be healthy"
deadline=$((SECONDS + STATUS_WAIT))
health=$(docker inspect -f '{{.State.Health.Status}}' "$NAME")
until [ "$health" = healthy ]; do
  [ "$health" != unhealthy ] || fail "Docker reports the container unhealthy: $(docker inspect -f '{{json .State.Health.Log}}' "$NAME")"
  [ "$SECONDS" -lt "$deadline" ] || fail "health status still '$health' after ${STATUS_WAIT} s"
  sleep 2
  health=$(docker inspect -f '{{.State.Health.Status}}' "$NAME")
done
echo "health status: $health"

echo "== the container runs as"
docker exec "$NAME" id

echo "== docker stop (SIGTERM; the daemon finishes in-flight sends and exits)"
docker stop -t 45 "$NAME" >/dev/null || fail "docker stop failed"
exit_code=$(docker inspect -f '{{.State.ExitCode}}' "$NAME")
echo "== container log"
docker logs "$NAME" 2>&1
[ "$exit_code" = 0 ] || fail "the daemon exited with code $exit_code after docker stop, not 0"
echo "exit code after docker stop: $exit_code"

echo "smoke: OK ($TAG from $BASE: migrated, /healthz 200, healthy, clean stop)"
