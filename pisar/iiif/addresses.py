"""Which addresses a manifest may make a worker connect to.

A manifest is input from outside: a canvas whose image service names ``169.254.169.254`` (a cloud's
metadata service), ``127.0.0.1:6379`` (the broker) or a host on the cluster's private network must
not turn a worker into a proxy into that network. So every connection the IIIF client opens is
checked here, after name resolution and for each redirect, and connects to the address that was
checked (a name that resolves elsewhere a second time cannot slip past: DNS rebinding).

Refused unless the operator allows their network (``PISAR_IIIF_ALLOW_NETWORKS``, CIDR): loopback,
link-local, private (RFC 1918, unique-local), shared (100.64/10), multicast, reserved and
unspecified addresses, and IPv4 mapped into IPv6 judged as the IPv4 address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from pisar.errors import ConfigError, LineError, TransientError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ForbiddenAddress(LineError):
    """A manifest named a host that resolves to an address Pisar does not connect to (loopback, private, ...)."""


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``PISAR_IIIF_ALLOW_NETWORKS`` entries as networks; a bad entry is a ``ConfigError``."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"PISAR_IIIF_ALLOW_NETWORKS: {value!r} is not an address or a network (CIDR)") from None
    return tuple(networks)


def _public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class AddressPolicy:
    """Public addresses, plus the networks the operator allows."""

    allowed: tuple[Network, ...] = ()

    def permits(self, address: Address) -> bool:
        return _public(address) or any(address in network for network in self.allowed)

    def resolve(self, host: str, port: int) -> list[tuple[int, str]]:
        """(family, address) of ``host`` to connect to, each checked; a refused one raises ``ForbiddenAddress``.

        Every resolved address must pass: a name that resolves to a public and a private address
        is refused, not connected to whichever comes first.
        """
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise TransientError(f"cannot resolve {host}: {exc.strerror}") from None
        addresses = []
        for family, _, _, _, sockaddr in found:
            address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
            if not self.permits(address):
                raise ForbiddenAddress(
                    f"{host} resolves to {address}, a {_kind(address)} address: not fetched (PISAR_IIIF_ALLOW_NETWORKS allows a network)"
                )
            addresses.append((family, str(address)))
        return list(dict.fromkeys(addresses))


def _kind(address: Address) -> str:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return "non-public"
