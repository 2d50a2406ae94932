"""The device authorization grant (RFC 8628) half of ``oauth_server.py``: ``/device`` hands out
codes, ``/verify?user_code=`` is the page where the user enters one (approved at once), and
the token endpoint's device grant answers by the switches: ``device_slow_down`` answers of
``slow_down`` first, then ``device_pending`` of ``authorization_pending`` (the user is still
typing), then ``device_outcome`` (approve, deny or expire); a visit of ``/verify`` approves
at once. ``device_answer`` replaces the ``/device`` answer (a dict, or raw bytes)."""

from __future__ import annotations

import secrets
import time

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class DeviceGrant:
    """Mixed into the request handler: uses its ``reply``, ``client_auth``, ``issue``."""

    def device(self, form: dict) -> None:
        sw = self.s.sw
        self.s.device_requests.append(form)
        client_id = self.client_auth(form)
        if client_id is None:
            return self.reply(401, {"error": "invalid_client"})
        registered = self.s.registered.get(client_id)
        if registered is not None and DEVICE_GRANT not in registered.get("grant_types", []):
            return self.reply(400, {"error": "unauthorized_client"})
        if sw["device_answer"] is not None:
            return self.reply(200, sw["device_answer"])
        device_code, user_code = "dc-" + secrets.token_urlsafe(16), secrets.token_hex(4).upper()
        self.s.device_codes[device_code] = {
            "client_id": client_id, "user_code": user_code, "resource": form.get("resource"),
            "scope": " ".join(s for s in (form.get("scope") or "").split()
                              if s in sw["grantable"]),
            "slow_downs": sw["device_slow_down"], "pending": sw["device_pending"],
            "approved": False}
        verify = self.s.base + sw["issuer_path"] + "/verify"
        answer = {"device_code": device_code, "user_code": user_code,
                  "verification_uri": verify,
                  "verification_uri_complete": f"{verify}?user_code={user_code}",
                  "expires_in": sw["device_expires_in"]}
        if sw["device_interval"] is not None:
            answer["interval"] = sw["device_interval"]
        self.reply(200, answer, Cache_Control="no-store")

    def verify(self, query: dict) -> None:
        for record in self.s.device_codes.values():
            if record["user_code"] == query.get("user_code"):
                record["approved"] = True
                return self.reply(200, b"<p>Approved.</p>", "text/html")
        self.reply(404, b"<p>No such code.</p>", "text/html")

    def device_token(self, form: dict, client_id: str) -> None:
        code = form.get("device_code")
        record = self.s.device_codes.get(code)
        self.s.device_polls.append(time.monotonic())
        if record is None or record["client_id"] != client_id \
                or record["resource"] != form.get("resource"):
            return self.reply(400, {"error": "invalid_grant"})
        if record["slow_downs"]:
            record["slow_downs"] -= 1
            return self.reply(400, {"error": "slow_down"})
        if not record["approved"] and record["pending"]:
            record["pending"] -= 1
            return self.reply(400, {"error": "authorization_pending"})
        outcome = "approve" if record["approved"] else self.s.sw["device_outcome"]
        if outcome == "deny":
            return self.reply(400, {"error": "access_denied",
                                    "error_description": "the user said no\non the phone"})
        if outcome == "expire":
            return self.reply(400, {"error": "expired_token"})
        del self.s.device_codes[code]
        self.issue(client_id, record["scope"], record["resource"])
