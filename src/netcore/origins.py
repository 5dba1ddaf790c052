"""Which web pages may open a WebSocket to the server: the Origin check at the upgrade.

A browser sends the page's origin (`scheme://host[:port]`) with every
WebSocket upgrade, and a page of any site can try to open one to any server;
the Origin header is how a server refuses pages it does not know (a cookie or
an address-based login would otherwise be usable by any site the player
visits). Programs that are not browsers (game engines' native builds,
netcore-dummy, test clients) send no Origin, or one of their choosing: the
check protects browsers' users, it is not authentication.

A policy is a comma-separated list of:

    self            the page's own origin: the Origin names the host the
                    request was sent to (its Host header), http or https
    loopback        any page served from localhost, 127.0.0.0/8 or [::1]
    *               any origin
    null            the literal "null" origin (file:// pages, sandboxed frames)
    <origin>        an exact origin, e.g. https://play.example.com

An upgrade without an Origin header is always allowed (not a browser). The
default, "self,loopback", lets the server's own chat page and local
development pages in, and nothing else.
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

DEFAULT_ORIGINS = "self,loopback"
KEYWORDS = ("self", "loopback", "*", "null")
LOOPBACK_NAMES = ("localhost",)


def _normalize_origin(text: str) -> str:
    """`scheme://host[:port]` in lower case, the default port dropped; ValueError if not one."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not an origin (scheme://host[:port])")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{text!r} is not an origin: no path, query or user part")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r} has a bad port") from None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OriginPolicy:
    """The parsed policy; allows(origin, host) is asked once per upgrade."""

    def __init__(self, spec: str = DEFAULT_ORIGINS):
        self.spec = spec
        self.any = self.own = self.loopback = self.null = False
        self.origins: frozenset[str] = frozenset()
        exact = set()
        for token in (t.strip() for t in spec.split(",")):
            if not token:
                continue
            lowered = token.lower()
            if lowered == "*":
                self.any = True
            elif lowered == "self":
                self.own = True
            elif lowered == "loopback":
                self.loopback = True
            elif lowered == "null":
                self.null = True
            else:
                exact.add(_normalize_origin(token))
        self.origins = frozenset(exact)

    def allows(self, origin: str | None, host: str | None) -> bool:
        if origin is None or self.any:
            return True
        origin = origin.strip()
        if origin == "null":
            return self.null
        try:
            normalized = _normalize_origin(origin)
        except ValueError:
            return False
        if normalized in self.origins:
            return True
        if self.loopback and _is_loopback(urlsplit(normalized).hostname or ""):
            return True
        if self.own and host:
            # The page's scheme is not in the Host header: behind a TLS proxy
            # an https page reaches us as plain http, so either matches.
            try:
                own = {_normalize_origin(f"{scheme}://{host.strip()}")
                       for scheme in ("http", "https")}
            except ValueError:
                return False
            return normalized in own
        return False

    def __str__(self) -> str:
        return self.spec


def parse_origins(spec: str) -> OriginPolicy:
    """An OriginPolicy, or ValueError naming the token that is not one."""
    return OriginPolicy(spec)
