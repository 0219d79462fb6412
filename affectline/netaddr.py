"""Which address a request comes from, for the login throttle and the audit trail.

The socket's peer is the only address nobody can choose. ``X-Forwarded-For`` is written by whoever sends
the request, so it is read only when the peer is a configured trusted proxy (``Settings.trusted_proxies``);
then the header's right-most address that is not itself a trusted proxy is the client (addresses to the
left of it were written by the client and may be anything).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_proxies(text: str) -> tuple[Network, ...]:
    """``"10.0.0.1, 192.168.0.0/16"`` as networks; ``ValueError`` naming an entry that is not an address."""
    out = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"AFFECTLINE_TRUSTED_PROXIES: {item!r} is not an IP address or CIDR network") from None
    return tuple(out)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    t = text.strip()
    if t.startswith("[") and "]" in t:  # [v6]:port
        t = t[1 : t.index("]")]
    elif t.count(":") == 1:  # v4:port
        t = t.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(t)
    except ValueError:
        return None
    return ip.ipv4_mapped or ip if isinstance(ip, ipaddress.IPv6Address) else ip


def _trusted(ip, proxies: tuple[Network, ...]) -> bool:
    return ip is not None and any(ip.version == n.version and ip in n for n in proxies)


def client_address(peer: str, forwarded_for: Iterable[str] = (), proxies: tuple[Network, ...] = ()) -> str:
    """The client's address: ``peer`` unless it is a trusted proxy, then the right-most untrusted
    ``X-Forwarded-For`` entry (all header lines, in order). A malformed entry where the client's should
    be is not believed: the last trusted hop's address is used instead."""
    peer_ip = _ip(peer)
    here = str(peer_ip) if peer_ip is not None else (peer or "unknown")
    if not proxies or not _trusted(peer_ip, proxies):
        return here
    hops = [h for line in forwarded_for for h in line.split(",") if h.strip()]
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:
            return here  # garbage where an address should be: the trusted hop that passed it on
        if not _trusted(ip, proxies):
            return str(ip)
        here = str(ip)
    return here  # every hop a trusted proxy: the left-most one
