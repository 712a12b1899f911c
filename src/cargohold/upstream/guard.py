"""Which network addresses a server-side (outbound) request may reach.

cargohold makes requests on behalf of its users: cache fills, imports, sync,
webhooks. Whoever can name an upstream could otherwise make the registry talk
to its own loopback services, the private network it sits in, or the cloud
metadata service (server-side request forgery). This module decides, for a
host and the addresses it resolved to, whether the connection may be made; it
does no I/O. ``upstream/http.py`` calls it for every connection, on the
addresses actually used, so that a DNS answer that changes between a check and
the connect (DNS rebinding) cannot get around it.

Refused: loopback, unspecified, link-local, private (RFC 1918, IPv6 unique
local ``fc00::/7``, deprecated site-local), shared/CGNAT ``100.64.0.0/10``,
multicast, broadcast, reserved and other special-purpose ranges
(documentation, benchmarking, IETF protocol assignments, anything outside
IPv6 global unicast ``2000::/3``), and IPv6 forms that carry one of those IPv4
addresses (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4
``2002::/16``, deprecated IPv4-compatible ``::a.b.c.d``).

``allow_private_upstreams`` lets all of those through (a registry on the same
machine or the office network is a legitimate upstream) except link-local
addresses (``169.254.0.0/16`` whole, ``fe80::/10``) and the cloud metadata
endpoints (``fd00:ec2::/32``, ``100.100.100.200``): no registry lives there, and
clouds put services that hand out the machine's credentials on them (AWS's
instance metadata at ``169.254.169.254``, ECS task credentials at
``169.254.170.2``, time and DNS at ``169.254.169.123``/``.253``, and others not
listed anywhere). They are refused whatever the setting, as a whole range so
that a new endpoint in it is covered too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOW_HINT = "set allow_private_upstreams (CARGOHOLD_ALLOW_PRIVATE_UPSTREAMS=1) to allow private upstreams"


class UpstreamRefused(Exception):
    """An outbound request that cargohold will not make; a policy decision, never worth retrying."""


class SchemeRefused(UpstreamRefused):
    """The URL's scheme is not http or https."""

    def __init__(self, scheme: str, url: str | None = None) -> None:
        self.scheme, self.url = scheme, url
        what = url or (f"a URL with the scheme {scheme!r}" if scheme else "a URL without a scheme")
        super().__init__(f"refusing {what}: outbound requests must be http or https")


class PrivateTargetRefused(UpstreamRefused):
    """The host is, or resolved to, an address outbound requests may not reach.

    ``host`` is what the URL named, ``address`` the offending address,
    ``category`` a short name for its class (``"loopback"``, ``"private"``,
    ``"IPv4-mapped loopback"``, ``"cloud metadata"``, …) and ``allowable``
    whether ``allow_private_upstreams`` would let it through.
    """

    def __init__(self, host: str, address: str, category: str, description: str, allowable: bool) -> None:
        self.host, self.address, self.category, self.allowable = host, address, category, allowable
        target = address if host == address else f"{host} (resolves to {address})"
        hint = ALLOW_HINT if allowable else "this is never allowed"
        super().__init__(f"refusing to connect to {target}: {description}; {hint}")


@dataclass(frozen=True)
class Verdict:
    """Why an address is refused: ``category`` (short, stable), ``description`` (for the message)."""

    category: str
    description: str
    allowable: bool = True


def _nets(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Cloud metadata services: AWS/GCP/Azure/OpenStack/DigitalOcean/Oracle (169.254.169.254), ECS task
# metadata (169.254.170.2), AWS's IPv6 endpoints (fd00:ec2::/32), Alibaba Cloud (100.100.100.200).
# Refused even when private upstreams are allowed; so is the rest of link-local (see NEVER_ALLOWED).
METADATA = _nets("169.254.169.254/32", "169.254.170.2/32", "fd00:ec2::/32", "100.100.100.200/32")

# Categories that allow_private_upstreams does not open: link-local holds the metadata endpoints.
NEVER_ALLOWED = frozenset({"cloud metadata", "link-local"})

# Checked in order; the first match names the class. (category, description, networks)
_IPV4: tuple[tuple[str, str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]], ...] = (
    ("unspecified", "an unspecified address (0.0.0.0 reaches this machine)", _nets("0.0.0.0/32")),
    ("reserved", "in 0.0.0.0/8, 'this network' (RFC 791)", _nets("0.0.0.0/8")),
    ("loopback", "a loopback address (127.0.0.0/8)", _nets("127.0.0.0/8")),
    ("link-local", "a link-local address (169.254.0.0/16)", _nets("169.254.0.0/16")),
    ("private", "a private address (RFC 1918)", _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
    ("shared", "in the shared address space 100.64.0.0/10 (carrier-grade NAT, RFC 6598)", _nets("100.64.0.0/10")),
    ("reserved", "in 192.0.0.0/24, reserved for IETF protocol assignments", _nets("192.0.0.0/24")),
    ("documentation", "a documentation address (RFC 5737)", _nets("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")),
    ("benchmarking", "a benchmarking address (198.18.0.0/15, RFC 2544)", _nets("198.18.0.0/15")),
    ("reserved", "in 192.88.99.0/24, the deprecated 6to4 relay anycast range", _nets("192.88.99.0/24")),
    ("multicast", "a multicast address (224.0.0.0/4)", _nets("224.0.0.0/4")),
    ("broadcast", "the limited broadcast address", _nets("255.255.255.255/32")),
    ("reserved", "a reserved address (240.0.0.0/4)", _nets("240.0.0.0/4")),
)

_IPV6: tuple[tuple[str, str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]], ...] = (
    ("unspecified", "an unspecified address (:: reaches this machine)", _nets("::/128")),
    ("loopback", "a loopback address (::1)", _nets("::1/128")),
    ("private", "in 64:ff9b:1::/48, the local-use NAT64 prefix", _nets("64:ff9b:1::/48")),
    ("reserved", "in 100::/64, the discard-only prefix", _nets("100::/64")),
    ("documentation", "a documentation address", _nets("2001:db8::/32", "3fff::/20")),
    ("reserved", "in 2001::/23, reserved for IETF protocol assignments (Teredo, benchmarking, ORCHID)", _nets("2001::/23")),
    ("unique-local", "a unique local address (fc00::/7, the IPv6 private range)", _nets("fc00::/7")),
    ("link-local", "a link-local address (fe80::/10)", _nets("fe80::/10")),
    ("private", "a site-local address (fec0::/10, deprecated private range)", _nets("fec0::/10")),
    ("multicast", "a multicast address (ff00::/8)", _nets("ff00::/8")),
)
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_IPV4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def parse_address(value: str | IPAddress) -> IPAddress:
    """An address from text; an IPv6 zone (``fe80::1%eth0``) is accepted and kept."""
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    return ipaddress.ip_address(value.strip().strip("[]"))


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 form carries, if it is one of the forms that reach IPv4 hosts."""
    if address in _IPV4_MAPPED:
        return "IPv4-mapped", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return "6to4", address.sixtofour
    return None


def classify(value: str | IPAddress) -> Verdict | None:
    """Why outbound requests may not reach ``value``, or None when it is a public address."""
    address = parse_address(value)
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        address = ipaddress.IPv6Address(address.compressed.split("%", 1)[0])
    if any(address in net for net in METADATA):
        return Verdict("cloud metadata", "a cloud metadata service address (it hands out the machine's credentials)", allowable=False)
    if isinstance(address, ipaddress.IPv4Address):
        for category, description, networks in _IPV4:
            if any(address in net for net in networks):
                return Verdict(category, description, allowable=category not in NEVER_ALLOWED)
        return None
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        form, inner = embedded
        verdict = classify(inner)
        if verdict is None:
            return None
        return Verdict(f"{form} {verdict.category}", f"the {form} form of {inner}, {verdict.description}", verdict.allowable)
    for category, description, networks in _IPV6:
        if any(address in net for net in networks):
            return Verdict(category, description, allowable=category not in NEVER_ALLOWED)
    if address in _IPV4_COMPATIBLE:
        return Verdict("reserved", "a deprecated IPv4-compatible IPv6 address (::/96)")
    if address not in _GLOBAL_UNICAST:
        return Verdict("reserved", "a reserved IPv6 address (outside global unicast 2000::/3)")
    return None


@dataclass(frozen=True)
class OutboundGuard:
    """The policy every outbound connection is checked against."""

    allow_private: bool = False

    @classmethod
    def from_settings(cls, settings: object) -> "OutboundGuard":
        return cls(allow_private=bool(getattr(settings, "allow_private_upstreams", False)))

    def check_address(self, host: str, address: str | IPAddress) -> None:
        """Raise ``PrivateTargetRefused`` when ``host``'s ``address`` may not be reached."""
        verdict = classify(address)
        if verdict is None or (verdict.allowable and self.allow_private):
            return
        raise PrivateTargetRefused(host, str(address), verdict.category, _with_address(address, verdict), verdict.allowable)

    def check(self, host: str, addresses: Iterable[str | IPAddress]) -> None:
        """Every address ``host`` resolved to must be allowed; one refused address refuses the host.

        Refusing the whole answer rather than dropping the bad addresses: a name that resolves to both
        a public and an internal address is either misconfigured or an attack, and connecting to
        whichever remains would make the outcome depend on the order of the answer.
        """
        seen = False
        for address in addresses:
            seen = True
            self.check_address(host, address)
        if not seen:
            raise UpstreamRefused(f"refusing to connect to {host}: it resolved to no address")


def _with_address(address: str | IPAddress, verdict: Verdict) -> str:
    text = str(address)
    return verdict.description if verdict.description.startswith(text) else f"{text} is {verdict.description}"


def is_ip_literal(host: str) -> bool:
    try:
        parse_address(host)
    except ValueError:
        return False
    return True
