"""Local-network auto-join: advertise this node over mDNS and report peers of the same cluster.

mDNS only finds peers. Its records live for minutes and say nothing about
whether a node still runs, so nothing here marks a member alive or dead: the
agent hands what it finds to the gossip core's join, and SWIM decides liveness.

The TXT record carries `cluster` (the first 12 hex of sha256(cluster id): a
label to tell clusters apart, not a secret; admission is the network key's
job), `node`, `region` and `api` (the API port). zeroconf is bound only to the
interface addresses it is given.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from zeroconf import IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from mesh.netaddr import join_hostport

log = logging.getLogger("murmur.discovery")

SERVICE_TYPE = "_murmur._udp.local."
CLUSTER_HASH_HEX_CHARS = 12
LOOKUP_TIMEOUT_MS = 3000
LOOKUPS_IN_FLIGHT_MAX = 32  # a LAN full of other services cannot make us open unbounded lookups
TXT_VALUE_MAX_BYTES = 64


class DiscoveryError(Exception):
    """mDNS cannot start; the message names the problem and the fix."""


@dataclass(frozen=True, slots=True)
class Peer:
    """A node of this cluster seen on the local network."""

    node_id: str
    region: str
    gossip_addr: str  # "host:port"
    api_port: int | None


def cluster_hash(cluster_id: str) -> str:
    """The `cluster` TXT value: first 12 hex of sha256(cluster id)."""
    return hashlib.sha256(cluster_id.encode()).hexdigest()[:CLUSTER_HASH_HEX_CHARS]


def check_interfaces(interfaces: Sequence[str]) -> list[str]:
    """The interface addresses as IPv4 strings; DiscoveryError names a bad one."""
    checked: list[str] = []
    for text in interfaces:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            raise DiscoveryError(
                f"--mdns-interface {text!r} is not an IP address; give the address of the LAN "
                "interface, e.g. --mdns-interface 192.168.1.20"
            ) from None
        if addr.version != 4 or addr.is_unspecified or addr.is_multicast:
            raise DiscoveryError(
                f"--mdns-interface {text}: give one specific IPv4 address of this device "
                "(mDNS here is IPv4 only), e.g. --mdns-interface 192.168.1.20"
            )
        if str(addr) not in checked:
            checked.append(str(addr))
    return checked


def _txt(properties: dict[bytes, bytes | None], key: str) -> str | None:
    value = properties.get(key.encode())
    if value is None or len(value) > TXT_VALUE_MAX_BYTES:
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return None


class Discovery:
    """An mDNS advertiser and browser for one node, on the asyncio loop."""

    def __init__(
        self,
        *,
        interfaces: Sequence[str],
        cluster_id: str,
        node_id: str,
        region: str,
        gossip_host: str,
        gossip_port: int,
        api_port: int,
        on_peer: Callable[[Peer], None],
    ) -> None:
        self.interfaces = check_interfaces(interfaces)
        if not self.interfaces:
            raise DiscoveryError("mDNS needs at least one --mdns-interface address")
        self.cluster = cluster_hash(cluster_id)
        self.node_id = node_id
        self._on_peer = on_peer
        self._info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{node_id}.{SERVICE_TYPE}",
            port=gossip_port,
            parsed_addresses=[gossip_host],
            properties={"cluster": self.cluster, "node": node_id, "region": region, "api": str(api_port)},
        )
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._lookups: set[asyncio.Task[None]] = set()
        self.counters: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    async def start(self) -> None:
        """Bind to the interfaces, advertise this node, start browsing."""
        try:
            self._zc = AsyncZeroconf(interfaces=list(self.interfaces), ip_version=IPVersion.V4Only)
        except OSError as exc:
            raise DiscoveryError(
                f"mDNS cannot bind {', '.join(self.interfaces)} ({exc.strerror or exc}); pass the "
                "address of an interface of this device with --mdns-interface, or --no-mdns"
            ) from None
        self._browser = AsyncServiceBrowser(self._zc.zeroconf, SERVICE_TYPE, handlers=[self._on_change])
        # Registration probes the name first (~0.75 s); peers see us once it is announced.
        await self._zc.async_register_service(self._info)
        log.info(
            "mDNS: advertising %s on %s (cluster %s), browsing for peers",
            SERVICE_TYPE,
            ", ".join(self.interfaces),
            self.cluster,
        )

    async def close(self) -> None:
        """Say goodbye on the network and release the sockets."""
        for task in list(self._lookups):
            task.cancel()
        await asyncio.gather(*self._lookups, return_exceptions=True)
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        if self._zc is not None:
            await self._zc.async_close()
            self._zc = None

    def _on_change(
        self, zeroconf: Any, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        # zeroconf calls handlers synchronously on the loop; the lookup is async.
        if state_change not in (ServiceStateChange.Added, ServiceStateChange.Updated):
            return
        if len(self._lookups) >= LOOKUPS_IN_FLIGHT_MAX:
            self._count("lookups_dropped")
            log.debug("mDNS: ignoring %s: %d lookups already in flight", name, len(self._lookups))
            return
        task = asyncio.get_running_loop().create_task(self._lookup(service_type, name))
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    async def _lookup(self, service_type: str, name: str) -> None:
        if self._zc is None:
            return
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(self._zc.zeroconf, LOOKUP_TIMEOUT_MS):
            self._count("lookups_unanswered")
            log.debug("mDNS: %s did not answer a lookup", name)
            return
        peer = self._peer_from(name, info)
        if peer is not None:
            self._count("peers_reported")
            self._on_peer(peer)

    def _peer_from(self, name: str, info: AsyncServiceInfo) -> Peer | None:
        properties: dict[bytes, bytes | None] = info.properties
        node_id = _txt(properties, "node")
        cluster = _txt(properties, "cluster")
        region = _txt(properties, "region")
        api = _txt(properties, "api")
        addresses = info.parsed_addresses(IPVersion.V4Only)
        reason = None
        if node_id == self.node_id:
            return None  # our own advertisement
        if cluster != self.cluster:
            reason = f"another cluster ({cluster!r}, ours {self.cluster})"
        elif not node_id or not region:
            reason = "no node or region in its TXT record"
        elif not addresses or not info.port:
            reason = "no IPv4 address or port"
        if reason is not None:
            self._count("peers_ignored")
            log.debug("mDNS: ignoring %s: %s", name, reason)
            return None
        assert node_id is not None and region is not None and info.port is not None
        # isdigit() alone takes "²", which int() refuses: ASCII digits only.
        api_port = int(api) if api is not None and api.isascii() and api.isdigit() and len(api) <= 5 else None
        return Peer(node_id, region, join_hostport(addresses[0], info.port), api_port)
