"""A remote server entry of the config file (``"url"`` instead of ``"command"``) as the
:class:`ClientSettings` its sessions reach it with.

The fields are named like client mode's flags (``clientId`` for ``--client-id``). What a
server cannot do is off: the browser and device sign-ins (nobody is there to sign in; the
remote's 401 is reported at start-up, server/remotes), ``API_ACCESS_TOKEN`` from our
environment (one variable must not reach every remote). A session waits a few seconds for an
unreachable remote, not client mode's half minute: an HTTP client is waiting.
"""

from __future__ import annotations

from typing import Any

from mcp_proxy.config.network import env_proxies, tls_verify
from mcp_proxy.config.settings import ClientSettings

START_TIMEOUT = 5.0  # a new session retries an unreachable remote this long
RECOVERY_TIMEOUT = 60.0  # a lost remote is reconnected this long, unless "recoveryTimeout"
LOCAL_FIELDS = ("args", "env", "cwd")
REMOTE_FIELDS = ("transport", "headers", "verifySsl", "clientId", "clientSecret", "tokenUrl",
                 "clientKey", "clientKeyAlg", "recoveryTimeout")


def remote_settings(entry: dict[str, Any]) -> ClientSettings:
    """The settings of one remote entry (already checked against the schema). As in client
    mode, the proxy variables (HTTPS_PROXY, NO_PROXY, ...) and, unless ``verifySsl`` names a
    bundle or is false, the CA variables (REQUESTS_CA_BUNDLE, ...) apply."""
    verify = entry.get("verifySsl", True)
    return ClientSettings(
        url=entry["url"], transport=entry.get("transport", "auto"),
        headers=dict(entry.get("headers", {})),
        verify=tls_verify(None) if verify is True else verify,
        proxies=env_proxies(),
        client_id=entry.get("clientId"), client_secret=entry.get("clientSecret"),
        token_url=entry.get("tokenUrl"), client_key=entry.get("clientKey"),
        client_key_alg=entry.get("clientKeyAlg"), oauth=False, oauth_device=False,
        start_timeout=START_TIMEOUT,
        recovery_timeout=float(entry.get("recoveryTimeout", RECOVERY_TIMEOUT)))


def misplaced(entry: dict[str, Any]) -> str | None:
    """What a warning says of fields that do nothing in this kind of entry, if any."""
    if "url" in entry:
        fields, why = [f for f in LOCAL_FIELDS if f in entry], "a remote server has no command"
    else:
        fields, why = [f for f in REMOTE_FIELDS if f in entry], "they are for a \"url\" entry"
    return f"ignoring {', '.join(map(repr, fields))} ({why})" if fields else None
