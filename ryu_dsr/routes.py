"""Where dscp backends are (L3DSR): routed prefixes and their gateways on
the switch's segment, from the ``routes`` setting."""

from __future__ import annotations

import ipaddress
import re

from ryu_dsr.model import InvalidInput, parse_address


def parse_routes(text: str, where: str) -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]]:
    """``PREFIX via GATEWAY`` items, comma separated: a gateway of the
    prefix's family, outside every routed prefix (it must be on the
    segment)."""
    routes = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = re.fullmatch(r"(\S+)\s+via\s+(\S+)", item)
        if not match:
            raise InvalidInput(where, f"{item!r} is not PREFIX via GATEWAY (like 192.168.50.0/24 via 10.0.0.254)")
        try:
            network = ipaddress.ip_network(match[1])
        except ValueError:
            raise InvalidInput(where, f"{match[1]!r} is not a network prefix (host bits must be zero)") from None
        gateway = parse_address(match[2], where)
        if (":" in gateway) != (network.version == 6):
            raise InvalidInput(where, f"{item!r}: the gateway is not of the prefix's family")
        routes.append((network, gateway))
    for _network, gateway in routes:
        inside = next((net for net, _gw in routes if ipaddress.ip_address(gateway) in net), None)
        if inside is not None:
            raise InvalidInput(
                where, f"gateway {gateway} is inside a routed prefix ({inside}): it must be on the segment"
            )
    return routes


def route_of(routes, ip: str) -> str | None:
    """The gateway of the longest routed prefix holding ``ip``, or None."""
    address = ipaddress.ip_address(ip)
    best = None
    for network, gateway in routes:
        if address.version == network.version and address in network:
            if best is None or network.prefixlen > best[0].prefixlen:
                best = (network, gateway)
    return best[1] if best else None
