"""The ``jwt-bearer`` grant (RFC 7523) half of ``oauth_server.py``, for enterprise sign-in:
the assertion must be an ID-JAG signed by the identity provider's key (the switch
``idp_key``), typed ``oauth-id-jag+jwt``, unexpired, never seen before (``jti``), its ``aud``
this server's issuer, its ``resource`` this MCP server (and the request's ``resource``), its
``client_id`` the client that authenticated. The access token carries its scope; a refresh
token only with the switch ``jag_refresh``. Refusals are ``invalid_grant`` with a reason."""

from __future__ import annotations

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class JwtBearerGrant:
    """Mixed into the request handler: uses its ``reply``, ``issue`` and server ``s``."""

    def jwt_bearer(self, form: dict, client_id: str) -> None:
        import jwt

        s = self.s
        s.assertions.append(form.get("assertion"))

        def refuse(why: str) -> None:
            self.reply(400, {"error": "invalid_grant", "error_description": why})

        assertion = form.get("assertion") or ""
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, s.sw["idp_key"], algorithms=["ES256"],
                                options={"verify_aud": False, "require": ["exp", "iat", "jti"]})
        except jwt.PyJWTError as exc:
            return refuse(f"the assertion: {exc}")
        resource = s.base + "/mcp"
        if header.get("typ") != "oauth-id-jag+jwt":
            return refuse("not an ID-JAG (typ)")
        if claims.get("aud") != s.issuer:
            return refuse(f"aud {claims.get('aud')} is not this server")
        if claims.get("resource") != resource or form.get("resource") != resource:
            return refuse("resource mismatch")
        if claims.get("client_id") != client_id:
            return refuse("client_id mismatch")
        if claims["jti"] in s.jtis:
            return refuse("replayed")
        s.jtis.add(claims["jti"])
        self.issue(client_id, claims.get("scope", ""), resource, refresh=s.sw["jag_refresh"])
