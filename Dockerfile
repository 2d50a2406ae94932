FROM python:3.12-slim
RUN apt-get update && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 mcp
WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY mcp_proxy ./mcp_proxy
RUN pip install --no-cache-dir . && pip install --no-cache-dir uv
USER mcp
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--", "mcp-proxy"]
# Server mode needs --host 0.0.0.0 inside a container; add --allow-host for your hostname.
CMD ["--help"]
