"""Where Chordline may send a request of its own (a webhook): the SSRF guard.

A tenant names the URL, so without a guard a webhook could reach what only the
fleet can: Redis, the cloud's metadata service (169.254.169.254), the admin
ports of its own network. A destination is allowed only when it is http(s) and
every address its host resolves to is public: not loopback, private, link-local,
shared (CGNAT), multicast, unspecified or reserved, nor any of those dressed as
an IPv4-mapped, NAT64 or 6to4 IPv6 address. The caller connects to the address
returned here (pinned: a second lookup could answer differently, DNS rebinding),
never to the name again. `CHORDLINE_WEBHOOK_ALLOW_HOSTS` lets an operator allow
named private hosts (a receiver inside the network; the tests' local one).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

from tasks.core.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Ranges the ipaddress module does not call private but no webhook should reach.
BLOCKED_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.88.99.0/24", "198.18.0.0/15",
    "255.255.255.255/32", "fec0::/10"))
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Forbidden(InvalidInput):
    """A destination the guard refuses; the message says why."""

    default_code = "WEBHOOK_URL_FORBIDDEN"


class Unresolved(Forbidden):
    """The host does not resolve now. A submission is not refused for it (the name may
    resolve by the time its events come, and each attempt checks again); an attempt
    is retried."""

    default_code = "WEBHOOK_HOST_UNRESOLVED"


@dataclass(frozen=True)
class Destination:
    """Where to connect: the URL's parts and the one address checked (pinned)."""

    scheme: str
    host: str
    port: int
    address: str


def check(url: str, allow_hosts: Collection[str] = ()) -> Destination:
    """The pinned destination of `url`, or Forbidden with the reason."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise Forbidden(f"only http and https URLs are allowed, not {parts.scheme or 'none'}")
    if parts.username or parts.password:
        raise Forbidden("the URL must not carry credentials")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise Forbidden("the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise Forbidden("the URL's port is not a number between 0 and 65535") from None
    addresses = resolve(host, port)
    if host not in allow_hosts:
        for address in addresses:
            reason = forbidden_reason(ipaddress.ip_address(address))
            if reason:
                raise Forbidden(f"{host} resolves to {address}, {reason}")
    return Destination(parts.scheme, host, port, addresses[0])


def check_submitted(url: str, allow_hosts: Collection[str] = ()) -> None:
    """What a submission's webhook_url must pass: everything but a host that does not
    resolve yet (Forbidden otherwise)."""
    with contextlib.suppress(Unresolved):
        check(url, allow_hosts)


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise Unresolved(f"{host} does not resolve") from None
    except UnicodeError:  # a name that can never resolve
        raise Forbidden(f"{host} is not a valid host name") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def forbidden_reason(address: IPAddress) -> str | None:
    """Why an address is not public, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (
            ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if address in NAT64 else None)
        if embedded is not None:
            reason = forbidden_reason(embedded)
            return f"{reason} (inside an IPv6 address)" if reason else None
    for name, flagged in (("a loopback address", address.is_loopback),
                          ("a link-local address (cloud metadata lives there)",
                           address.is_link_local),
                          ("a multicast address", address.is_multicast),
                          ("an unspecified address", address.is_unspecified),
                          ("a reserved address", address.is_reserved),
                          ("a private address", address.is_private)):
        if flagged:
            return name
    if any(address in net for net in BLOCKED_NETWORKS if net.version == address.version):
        return "a shared or special-purpose address"
    if not address.is_global:
        return "not a public address"
    return None
