ARG BASE=python:3.12-slim

# digest in a container: every setting comes from DIGEST_<KEY> environment variables (see
# config/digest.toml or the README); no config file is needed. The command migrates the schema,
# then runs the daemon (scheduler + web endpoints) on $PORT, 8000 unless set:
#
#   docker build -t digest .
#   docker run -p 8000:8000 -v digest-data:/data \
#     -e DIGEST_SECRET_KEY=... -e DIGEST_SENDER='News <news@example.org>' -e DIGEST_SMTP_HOST=... digest
#
# One-off commands run in the same image: docker run --rm ... digest digest status
#
# The dependencies go into a venv, so the same steps work on python:*-slim and on a plain Debian
# python3 base (whose pip refuses system-wide installs, PEP 668): scripts/make-local-base.sh.

# Stage 1 builds the wheel with the lock's setuptools; only the wheel reaches the image, so digest
# runs from site-packages with its templates, pages and migrations inside the package, exactly as
# `pip install` of the wheel gives it anywhere else.
FROM ${BASE} AS wheel
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY digest ./digest
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --progress-bar off --disable-pip-version-check \
        -c requirements.lock setuptools \
    && /opt/build/bin/pip wheel --no-cache-dir --progress-bar off --disable-pip-version-check \
        --no-deps --no-build-isolation --wheel-dir /dist . \
    && cp requirements.lock /dist/

FROM ${BASE}

ENV PATH=/opt/digest/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000 \
    DIGEST_DATABASE_URL=sqlite:////data/digest.db

# A fixed uid, so Kubernetes' runAsNonRoot can check it and a host folder can be chowned to it.
RUN groupadd --gid 10001 digest \
    && useradd --uid 10001 --gid digest --no-create-home --home-dir /data --shell /usr/sbin/nologin digest \
    && mkdir -p /data \
    && chown digest:digest /data \
    && python3 -m venv /opt/digest

# requirements.lock pins every runtime and dev dependency; as constraints, the dev pins are unused.
COPY --from=wheel /dist /tmp/dist
RUN pip install --no-cache-dir --progress-bar off -c /tmp/dist/requirements.lock /tmp/dist/digest-*.whl \
    && rm -rf /tmp/dist

# The SQLite default lives here: mount a volume on /data, or set DIGEST_DATABASE_URL to PostgreSQL.
WORKDIR /data
USER 10001:10001
EXPOSE 8000

# slim images have no curl: python's urllib fails (exit 1) on a refused connection or a 503.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]

# exec: serve becomes PID 1 and gets docker stop's SIGTERM (it finishes in-flight sends, exits 0).
CMD ["sh", "-c", "digest db upgrade && exec digest serve --host 0.0.0.0 --port \"${PORT}\""]
