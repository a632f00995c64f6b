#!/usr/bin/env bash
# Make a local stand-in for python:3.12-slim when Docker Hub cannot be reached:
# a minimal Debian bookworm (Python 3.11, which digest supports) imported as a Docker image.
#
#   sudo scripts/make-local-base.sh                     # -> local/python:3.11-bookworm
#   BASE=local/python:3.11-bookworm scripts/smoke-image.sh
#
# Needs root, debootstrap (apt-get install debootstrap), a running Docker engine and Debian's
# package mirror. The image has python3 with venv and pip, which is all the Dockerfile uses
# (it makes its own venv, so Debian's "externally managed" pip is never asked to install).
set -euo pipefail

TAG=${TAG:-local/python:3.11-bookworm}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# Certificate authorities this host added to its own trust store (a TLS-inspecting proxy's, say)
# are trusted inside the image too, so pip in `docker build` reaches PyPI the way the host does.
# Set HOST_CAS= (empty) to leave the image with Debian's stock list only.
HOST_CAS=${HOST_CAS-/usr/local/share/ca-certificates}

fail() { echo "make-local-base: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "debootstrap needs root"
command -v debootstrap >/dev/null || fail "debootstrap not found: apt-get install debootstrap"
docker info >/dev/null 2>&1 || fail "no Docker engine answers (start dockerd first)"

rootfs=$(mktemp -d /tmp/digest-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

echo "== debootstrap $SUITE into $rootfs"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  "$SUITE" "$rootfs" "$MIRROR"

if [ -n "$HOST_CAS" ] && compgen -G "$HOST_CAS/*.crt" >/dev/null; then
  echo "== trusting the host's local CAs from $HOST_CAS"
  cp "$HOST_CAS"/*.crt "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates
fi

# Keep the image small, as the slim images do.
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin

echo "== docker import as $TAG"
tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$TAG"
docker run --rm --network host "$TAG" python3 -c 'import sys, venv; print("python", sys.version.split()[0], "with venv: ok")'
