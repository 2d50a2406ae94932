# mcp-proxy images (see README.md, "Docker"):
#   docker build -t mcp-proxy .                        # the default image: Python, uv/uvx
#   docker build --target node -t mcp-proxy:node .     # the same plus Node.js, npm and npx

# Node.js comes from its official image, built on the same Debian release as Python's.
FROM node:22-bookworm-slim AS node-dist

FROM python:3.12-slim-bookworm AS base
# tini is PID 1: it hands signals to mcp-proxy and reaps what exited servers leave behind.
# Debian's tini is not pinned: an exact version would break the build at its next update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --user-group mcp
# Tools installed with `uv tool install` in a derived image land where user mcp can run them.
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_TOOL_DIR=/opt/uv-tools \
    UV_TOOL_BIN_DIR=/usr/local/bin \
    MCP_PROXY_HEALTH_URL=http://127.0.0.1:8080/healthz
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY mcp_proxy ./mcp_proxy
# uv brings uvx, so `uvx mcp-server-fetch` works as a server command; its cache is a
# directory of its own so that a volume can keep downloads across restarts. gunicorn (with
# its gevent worker) runs the image's workers when scaled out (deploy/compose.scale.yaml).
RUN pip install . uv==0.13.8 "gunicorn[gevent]==27.0.1" \
    && rm -rf /src/build \
    && install -d -o mcp -g mcp /home/mcp/.cache/uv
USER 10001
WORKDIR /home/mcp
EXPOSE 8080
# Exits non-zero when the URL does not answer 2xx within 4 s (server mode only).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['MCP_PROXY_HEALTH_URL'], timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "--", "mcp-proxy"]
CMD ["--help"]

FROM base AS node
USER 0
COPY --from=node-dist /usr/local/bin/node /usr/local/bin/node
COPY --from=node-dist /usr/local/lib/node_modules /usr/local/lib/node_modules
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
    && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
    && node --version && npm --version
USER 10001

# The last stage is what a plain `docker build` makes: the default image.
FROM base AS default
