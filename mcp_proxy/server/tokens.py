"""Whether a caller's OAuth access token is good here, and whose it is.

This module owns the checks of a token: a JWT's signature against the issuer's keys
(issuer_keys.py) and its claims, or an opaque token's introspection (introspection.py); and
the cache of what a check found. It never reads a request (resource_meta.py does) and never
sees a message.

A JWT is checked with PyJWT (the ``oauth`` extra): its header's ``alg`` must be on the
allow-list of public-key algorithms (never ``none``, never an HMAC, which a forger could
compute with the issuer's *public* key as the secret), and must agree with the key's own
``alg`` and type; then ``iss`` (the configured issuer, exactly), ``aud`` (must name this
resource: a token minted for another resource is refused), ``exp`` and ``nbf`` with a small
leeway. What a check found is kept per token until the token expires, in a bounded cache, so
a signature is verified once per token, not once per request.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from mcp_proxy.config.settings import ResourceSettings
from mcp_proxy.errors import TokenRefused
from mcp_proxy.server.introspection import Introspection
from mcp_proxy.server.issuer_keys import IssuerKeys

ALGORITHMS = frozenset(("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                        "ES256", "ES384", "ES512", "EdDSA"))
CACHE_SIZE = 10_000
MAX_TOKEN = 16_384  # bytes: longer is no access token we would take
MAX_TRIED_KEYS = 8  # a token without kid is tried against this many keys at most


@dataclass(frozen=True)
class Grant:
    """What a good token grants: whose it is, its scopes, its audiences, until when."""

    principal: str  # "sub:" + 16 hex of SHA-256(iss NUL sub): stable, and no secret
    scopes: frozenset[str]
    audiences: frozenset[str]
    expires: float  # epoch seconds (leeway included)


def principal_of(issuer: str, subject: str) -> str:
    return "sub:" + hashlib.sha256(f"{issuer}\0{subject}".encode()).hexdigest()[:16]


def scopes_of(claims: dict) -> frozenset[str]:
    """``scope`` (RFC 9068: a space-separated string) or ``scp`` (a list, as some issue)."""
    scope = claims.get("scope", claims.get("scp"))
    if isinstance(scope, str):
        return frozenset(scope.split())
    if isinstance(scope, list):
        return frozenset(item for item in scope if isinstance(item, str))
    return frozenset()


def _audiences(claims: dict) -> frozenset[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return frozenset((aud,))
    if isinstance(aud, list) and all(isinstance(item, str) for item in aud):
        return frozenset(aud)
    raise TokenRefused("the token names no audience")


class TokenVerifier:
    """``verify(token, audience)`` -> :class:`Grant`; raises TokenRefused, or
    IssuerUnreachable when the issuer's keys or introspection cannot be had."""

    def __init__(self, settings: ResourceSettings, keys: IssuerKeys | None = None,
                 introspection: Introspection | None = None) -> None:
        import jwt  # the ``oauth`` extra; resource_flags.py checked it is installed

        self._jwt = jwt
        self.settings = settings
        self.keys = keys or IssuerKeys(settings.issuer)
        self.introspection = introspection or (
            Introspection(settings) if settings.introspection_url else None)
        self._cache: dict[str, Grant] = {}

    def verify(self, token: str, audience: str, *others: str) -> Grant:
        """The token's grant, if it is good and for ``audience`` (or one of ``others``)."""
        grant = self._cache.get(token)
        if grant is None:
            grant = self._check(token)
            self._keep(token, grant)
        elif grant.expires <= time.time():
            del self._cache[token]
            raise TokenRefused("the token has expired")
        if audience not in grant.audiences and not any(
                other in grant.audiences for other in others):
            raise TokenRefused("the token was issued for another resource")
        return grant

    def _keep(self, token: str, grant: Grant) -> None:
        cache = self._cache
        if len(cache) >= CACHE_SIZE:
            now = time.time()
            for stale in [key for key, kept in cache.items() if kept.expires <= now]:
                del cache[stale]
            while len(cache) >= CACHE_SIZE // 2:  # still full: the oldest half goes
                del cache[next(iter(cache))]
        cache[token] = grant

    def _check(self, token: str) -> Grant:
        if len(token) > MAX_TOKEN or not token.isascii():
            raise TokenRefused("the token is malformed")
        if token.count(".") != 2:
            if self.introspection is None:
                raise TokenRefused("the token is not a JWT")
            return self._grant(self.introspection.claims(token), self.introspection.lifetime)
        return self._grant(self._decode(token), None)

    def _decode(self, token: str) -> dict:
        jwt = self._jwt
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRefused("the token is malformed") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            raise TokenRefused(f"the token's algorithm is not one taken here "
                               f"({', '.join(sorted(ALGORITHMS))})")
        if kid is not None and not isinstance(kid, str):
            raise TokenRefused("the token is malformed")
        algorithm = jwt.get_algorithm_by_name(alg)
        tried = 0
        for jwk in self.keys.candidates(kid):
            if jwk.get("alg", alg) != alg:
                continue
            try:
                key = algorithm.from_jwk(jwk)
            except (jwt.PyJWTError, ValueError, TypeError, KeyError, AttributeError):
                continue  # not a key of this algorithm's type (or not a key at all)
            if getattr(key, "is_private", False):
                continue
            tried += 1
            try:
                return jwt.decode(token, key, algorithms=[alg], issuer=self.settings.issuer,
                                  leeway=self.settings.leeway,
                                  options={"require": ["exp", "iss"], "verify_aud": False})
            except jwt.InvalidSignatureError:
                if tried >= MAX_TRIED_KEYS:
                    break
            except jwt.ExpiredSignatureError:
                raise TokenRefused("the token has expired") from None
            except jwt.ImmatureSignatureError:
                raise TokenRefused("the token is not valid yet") from None
            except jwt.InvalidIssuerError:
                raise TokenRefused("the token is from another issuer") from None
            except jwt.MissingRequiredClaimError as exc:
                raise TokenRefused(f"the token has no {exc.claim!r} claim") from None
            except (jwt.PyJWTError, ValueError, TypeError):  # a claim of an odd type, too
                raise TokenRefused("the token is malformed") from None
        if not tried:
            raise TokenRefused("the token was signed with a key the issuer does not publish")
        raise TokenRefused("the token's signature is not the issuer's")

    def _grant(self, claims: dict, lifetime: float | None) -> Grant:
        subject = claims.get("sub") or claims.get("client_id")
        if not isinstance(subject, str):
            raise TokenRefused("the token names no subject")
        exp = claims.get("exp")
        expires = exp + self.settings.leeway if isinstance(exp, (int, float)) \
            and not isinstance(exp, bool) else float("inf")
        if lifetime is not None:  # an introspection answer is kept a minute at most
            expires = min(expires, time.time() + lifetime)
        return Grant(principal_of(self.settings.issuer, subject), scopes_of(claims),
                     _audiences(claims), expires)

