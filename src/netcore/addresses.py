"""Source addresses as per-address limits count them.

A limit per source address (connections, logins in flight, failed logins)
needs a key per client: the IPv4 address, or the /64 network of an IPv6
address (one subscriber's share: an IPv6 client can pick any address in its
/64 at will, so counting single addresses would count nothing). Clients
from an exempt network (by default loopback: tests, benchmarks, a proxy on
the same host) have no key and are not counted.

Used once per connection or per login, never per packet.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable

IPV6_PREFIX = 64
DEFAULT_EXEMPT = "127.0.0.0/8,::1"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str | Iterable[str]) -> tuple[Network, ...]:
    """Networks from "127.0.0.0/8,::1" (or a list of such); "" is none.
    A bad entry raises ValueError naming it."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return tuple(out)


def address_key(peername, exempt: tuple[Network, ...] = ()) -> str | None:
    """The key a per-address limit counts this peer under, or None: the peer
    is in an exempt network, or its address is unknown (not an IP socket, or
    a connection reset before its address was read)."""
    if not peername or not isinstance(peername, (tuple, list)):
        return None
    try:
        ip = ipaddress.ip_address(peername[0].split("%", 1)[0])    # drop an IPv6 zone
    except (ValueError, AttributeError):
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for net in exempt:
        if ip in net:
            return None
    if ip.version == 6:
        return str(ipaddress.IPv6Network((int(ip) >> (128 - IPV6_PREFIX) << (128 - IPV6_PREFIX),
                                          IPV6_PREFIX)))
    return str(ip)
