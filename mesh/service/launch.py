"""Running `murmur agent`: sockets, the core, the API, discovery, signals (mesh/service/agent.py is the node).

Start-up order matters: the sockets are bound first (the core must know its own
addresses), then the core is built with the persisted incarnation (it starts one
above it, so a restart outranks every notice about its previous life) and this
node's admission, then the API starts answering and the node joins its seeds
plus the peers it knew. SIGTERM/SIGINT: a graceful leave, ~1 s of driving so the
leave reaches peers, then everything closes and the process exits 0. A node that
learns it was revoked stops the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import random
import signal
import socket
from collections.abc import Sequence

import aiohttp
from aiohttp import web

from consensus.election import ElectionCore
from consensus.peers import GossipElectionPeers
from gossip.config import LOCAL, WAN, profile
from gossip.envelope import Keyring
from gossip.kinds import DESIRED_KIND
from gossip.node import GossipNode
from gossip.records import Record
from gossip.trust import StaticTrust
from inference.kinds import CHECKED_KINDS
from inference.manifest import ARTIFACT_SIZE_MAX_BYTES
from inference.placing import PlacementCore
from inference.placing_ports import GossipPlacementMesh
from mesh.netaddr import AddressError, is_unspecified, join_hostport, split_hostport
from mesh.service.admission import admission_invite, describe_refusal, new_admission, own_admission
from mesh.service.agent import (
    KNOWN_PEERS_AS_SEEDS_MAX,
    LEAVE_LINGER_S,
    Agent,
    AgentError,
    AgentOptions,
)
from mesh.service.api import FORWARD_TIMEOUT_S, create_app
from mesh.service.artifactapi import add_routes as add_artifact_routes
from mesh.service.artifactapi import find_holders
from mesh.service.artifacts import ArtifactStore
from mesh.service.artifactsync import ArtifactKeeper, artifact_families
from mesh.service.dashboard import add_routes as add_dashboard_routes
from mesh.service.discovery import Discovery, DiscoveryError
from mesh.service.election import SqliteHardState
from mesh.service.fdlimit import raise_open_files_limit
from mesh.service.fetcher import Fetcher
from mesh.service.httpguard import API_HEAD_TIMEOUT_S, ApiGuard, api_caps
from mesh.service.inferencemetrics import inference_source
from mesh.service.keysapi import add_routes as add_keyring_routes
from mesh.service.lograte import install_repeat_filter
from mesh.service.metrics import election_source, placement_source
from mesh.service.modeldebug import add_routes as add_model_debug_routes
from mesh.service.modelhost import HostSettings, ModelHost
from mesh.service.modellanes import ModelLanes
from mesh.service.netkeys import KeyFileError, KeyKeeper, load_key_file, startup_keys
from mesh.service.observeapi import add_routes as add_observability_routes
from mesh.service.opsapi import add_routes as add_ops_routes
from mesh.service.placementapi import add_routes as add_placement_routes
from mesh.service.placements import MoveTally, artifact_files, unload_dropped
from mesh.service.remotereplicas import RemoteReplicas
from mesh.service.restore import restore_records
from mesh.service.runtime import Runtime
from mesh.service.servedmodels import ServedModels
from mesh.service.store import Store, StoreError
from mesh.service.v2api import InferenceFront, read_token_file
from mesh.service.v2api import add_routes as add_inference_routes
from mesh.service.v2wire import InferWire
from mesh.trust.cluster import JoinToken
from mesh.trust.identity import Identity
from node.core import Node
from node.netkeys import GossipPeers, NetKeyCore

log = logging.getLogger("murmur.agent")


def _bind_api_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _parse_bind(flag: str, text: str) -> tuple[str, int]:
    try:
        host, port = split_hostport(text)
    except AddressError as exc:
        raise AgentError(f"{flag}: {exc}") from None
    if is_unspecified(host):
        raise AgentError(
            f"{flag} {text}: {host} is an unspecified address that peers cannot reach; "
            "bind the address peers use to reach this device, e.g. 192.168.1.20:7946"
        )
    return host, port


def listen_problem(flag: str, text: str, exc: OSError) -> str:
    """Why the agent cannot listen on `flag` HOST:PORT, and what to do: an address this host
    does not have is not a busy port."""
    host, port = split_hostport(text)
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{flag} {text}: {host} is not an address of this host; use one of its own addresses "
            "(ip -brief addr lists them), e.g. the LAN address peers reach it at"
        )
    if exc.errno == errno.EADDRINUSE:
        return f"{flag} {text}: port {port} is in use; pick a free port or stop what uses it"
    if exc.errno == errno.EACCES:
        return (
            f"{flag} {text}: not allowed to listen on port {port} (ports below 1024 need root); "
            "pick one above"
        )
    return f"{flag} {text}: cannot listen there ({exc.strerror or exc})"


def describe_seeds(seeds: Sequence[str], mdns_interfaces: Sequence[str]) -> str:
    """The seeds a starting agent joins through, for its ready line: with none, whether mDNS
    will find peers (an agent on a LAN usually joins that way) or it waits to be joined."""
    if seeds:
        return ", ".join(seeds)
    if mdns_interfaces:
        return f"none (peers are found by mDNS on {', '.join(mdns_interfaces)})"
    return "none (no mDNS: this node waits for others to join through it)"


async def _resolve_seeds(seeds: Sequence[str], own: str) -> list[str]:
    loop = asyncio.get_running_loop()
    resolved: list[str] = []
    for seed in seeds:
        host, port = split_hostport(seed)
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            log.warning("seed %s does not resolve (%s); skipping it", seed, exc)
            continue
        addr = join_hostport(str(infos[0][4][0]), port)
        if addr != own and addr not in resolved:
            resolved.append(addr)
    return resolved


async def run_agent(options: AgentOptions, token: JoinToken, identity: Identity, store: Store) -> int:
    """Run the node until SIGTERM/SIGINT; returns the exit code."""
    loop = asyncio.get_running_loop()
    gossip_host, gossip_port = _parse_bind("--bind", options.bind)
    api_host, api_port = _parse_bind("--api", options.api)
    try:
        region_config = profile(options.profile)
    except ValueError as exc:
        raise AgentError(f"--profile: {exc}") from None
    fleet_config = LOCAL if region_config.name == "local" else WAN
    inference_token = None
    if options.inference_token_file is not None:
        try:
            inference_token = read_token_file(options.inference_token_file)
        except ValueError as exc:
            raise AgentError(f"--inference-token-file: {exc}") from None
    open_files_soft = raise_open_files_limit()

    # The core starts one above the persisted incarnation and reports it at once
    # (IncarnationChanged), so every start, even after kill -9, outranks the last.
    persisted_incarnation = store.incarnation
    try:
        persisted_records = store.load_records()
    except StoreError as exc:
        raise AgentError(str(exc)) from None
    # The root of trust: the cluster and its operator key. Everything else (granted
    # operator keys, admitted nodes) the store learns from signed records.
    trust = StaticTrust(operators=[token.operator_key], cluster_id=token.cluster_id)
    admission = own_admission(identity, token, options.region, persisted_records)
    # The keys kept from earlier runs come first (a rotation's newest key), then the token's
    # keys unless a rotation retired them (mesh/service/netkeys.py).
    try:
        keys = startup_keys(token.network_keys, load_key_file(options.data_dir))
    except KeyFileError as exc:
        raise AgentError(str(exc)) from None
    keyring = Keyring(list(keys.keys))
    keeper = KeyKeeper(options.data_dir, keyring, keys.retired)
    try:
        keeper.save()
    except OSError as exc:
        raise AgentError(f"cannot write the network keys in {options.data_dir}: {exc}") from None

    runtime = Runtime(
        keyring,
        packet_max_bytes=max(region_config.packet_max_bytes, fleet_config.packet_max_bytes),
        stream_max_bytes=max(region_config.stream_max_bytes, fleet_config.stream_max_bytes),
        # One timeout for every stream: fleet exchanges cross slow links, and a
        # region exchange that takes longer only delays its failure report.
        stream_timeout_s=max(region_config.stream_timeout_s, fleet_config.stream_timeout_s),
        node_key=identity.signing_key,
    )
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(install_repeat_filter())
        try:
            gossip_addr = await runtime.bind(gossip_host, gossip_port)
        except OSError as exc:
            raise AgentError(listen_problem("--bind", options.bind, exc)) from None
        stack.push_async_callback(runtime.close)
        try:
            api_sock = _bind_api_socket(api_host, api_port)
        except OSError as exc:
            raise AgentError(listen_problem("--api", options.api, exc)) from None
        api_addr = join_hostport(api_host, int(api_sock.getsockname()[1]))

        gossip = GossipNode(
            identity.node_id,
            gossip_addr,
            options.region,
            random.Random(),
            region_config=region_config,
            fleet_config=fleet_config,
            api_addr=api_addr,
            incarnation=persisted_incarnation,
            now=loop.time(),
            trust=trust,
            admission=admission,
            node_key=identity.signing_key,
            kinds=CHECKED_KINDS,
        )
        # The network key's rotations (node/netkeys.py), applied to the keyring and disk by the keeper.
        netkeys = NetKeyCore(
            identity.node_id,
            random.Random(),
            node_key=identity.signing_key,
            peers=GossipPeers(gossip),
            keys=keyring.keys,
            now=loop.time(),
            retired=keys.retired,
            config=options.netkey_config(),
        )
        # The region's leader election: its hard state in the node database (saved, synced,
        # before any message that depends on it leaves), votes signed with the node key.
        try:
            election = ElectionCore(
                identity.node_id,
                options.region,
                random.Random(),
                None,
                SqliteHardState(store),
                GossipElectionPeers(gossip),
                identity.signing_key,
                now=loop.time(),
            )
        except StoreError as exc:
            raise AgentError(str(exc)) from None
        # The region's placement (inference/placing.py): the leader publishes, every node applies
        # and reports its replicas. The model host loads each replica from the artifact store
        # (the agent's; it opens it on its data dir) and says when it is ready: warmed up.
        artifacts = ArtifactStore(options.data_dir / "artifacts", size_max_bytes=ARTIFACT_SIZE_MAX_BYTES)
        models = ModelHost(
            artifact_files(artifacts),
            HostSettings(options.intra_op_threads),
        )
        stack.push_async_callback(models.close)
        placement = PlacementCore(
            identity.node_id,
            options.region,
            identity.signing_key,
            GossipPlacementMesh(gossip),
            election,
            models,
            now=loop.time(),
        )
        node = Node(gossip, [netkeys, election, placement])
        # Restored records are re-verified (rows that fail are removed and counted);
        # anti-entropy (the join's push-pull first) carries them on to peers that lack them.
        restore_records(node.state, store, persisted_records)
        if node.state.is_revoked(identity.node_id):
            raise AgentError(
                f"this node ({identity.node_id}) was revoked by an operator; it cannot rejoin with this "
                "identity. To bring the device back, remove its data dir (its key) and start it with a "
                "new token from murmur invite"
            )
        if not node.state.is_admitted(identity.node_id) and token.invite != admission_invite(admission):
            # The admission we kept no longer holds (e.g. displaced): present the token's invite.
            admission = new_admission(identity, token, options.region, above=admission)
            node.present_admission(loop.time(), admission)
        if not node.state.is_admitted(identity.node_id) and node.admission_problem is None:
            node.gossip.admission_problem = "refused"  # what it restored displaced it (an invite used up)
        if node.admission_problem is None:
            store.save_records([admission])  # a restart presents the same admission
        else:
            log.error(
                "this node's invite is not valid (%s): peers will refuse to admit it and it will see no "
                "members; ask the operator for a new token (murmur invite --cluster DIR)",
                describe_refusal(node.admission_problem, own_regions(admission, options.region)),
            )
        agent = Agent(options, identity, store, node, runtime, trust)
        agent.netkeys = netkeys
        agent.election = election
        agent.metrics.add(election_source(election, identity.node_id))
        agent.placement = placement
        agent.artifacts = artifacts  # one store: the API writes where placement looks
        agent.models = models
        runtime.subscribe(unload_dropped(models))
        # Artifacts from peers for this node's replicas, and garbage collection (docs/artifacts.md).
        holders_client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S))
        stack.push_async_callback(holders_client.close)
        fetcher = Fetcher(
            artifacts,
            identity.node_id,
            lambda sha256: find_holders(agent, holders_client, sha256),
        )
        stack.push_async_callback(fetcher.close)
        artifact_keeper = ArtifactKeeper(
            artifacts,
            fetcher,
            lambda: node.state.records(DESIRED_KIND),
            lambda: [v.deployment for v in placement.own_replicas()],
            budget_bytes=options.artifact_budget_bytes,
        )
        agent.fetcher = fetcher
        models.fetching = fetcher.is_fetching  # a replica whose artifact is on its way is loading
        agent.artifact_keeper = artifact_keeper
        artifacts.on_change = agent.artifacts_changed
        agent.metrics.add(lambda: artifact_families(artifact_keeper))
        moves = MoveTally()
        runtime.subscribe(moves.on_event)
        agent.metrics.add(placement_source(placement, moves.moves))
        runtime.subscribe(keeper.on_event)
        runtime.attach(node, peers=node)

        guard = ApiGuard(
            api_caps(open_files_soft),
            counters=agent.api_counters,
            # An inference request whose client left leaves its model's queue (modellanes.py).
            cancel_when_gone=lambda request: request.path.startswith("/v2/models/"),
        )
        app = create_app(agent)
        add_observability_routes(app, agent.event_streams, agent.metrics_registry)
        add_placement_routes(app)
        add_ops_routes(app)
        add_dashboard_routes(app)
        # The Open Inference Protocol (/v2): served here from the model host when this node holds
        # a ready replica, otherwise forwarded to one (docs/inference.md).
        model_host = ServedModels(models)
        lanes = ModelLanes(model_host, model_host.policy_of, threads=options.inference_threads)
        if options.debug_hooks:
            add_model_debug_routes(app, models, lanes)
        add_artifact_routes(app)
        front = InferenceFront(
            identity.node_id,
            options.region,
            model_host,
            placement.replicas,
            agent.member,
            lanes,
            token=inference_token,
            remote=RemoteReplicas(
                lambda: {r: s.api_addrs for r, s in agent.summaries().items() if r != options.region}
            ),
        )
        add_inference_routes(app, front)
        agent.metrics.add(inference_source(front.stats, front.lanes.queue_depths))
        add_keyring_routes(app)
        app.middlewares.append(guard.middleware)
        # keepalive_timeout: aiohttp's own idle close agrees with the guard's head deadline.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, keepalive_timeout=API_HEAD_TIMEOUT_S
        )
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        assert runner.server is not None
        # Our own listener instead of a SockSite: every connection passes the guard first.
        # Inference requests for this node's models are read and answered by the lean path;
        # the connection goes to aiohttp at its first other request (mesh/service/v2wire.py).
        api_server = await loop.create_server(
            guard.protocol_factory(
                runner.server, lambda conn, inner: InferWire(front, conn, inner, agent.api_counters)
            ),
            sock=api_sock,
        )
        stack.callback(api_server.close)

        stop = asyncio.Event()
        agent.on_revoked = stop.set
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
            stack.callback(loop.remove_signal_handler, sig)

        mdns_interfaces: list[str] = []
        if options.mdns:
            discovery = _make_discovery(options, token, agent, gossip_addr, api_addr)
            if discovery is not None:
                mdns_interfaces = list(discovery.interfaces)
                stack.push_async_callback(discovery.close)
                try:
                    await discovery.start()
                except DiscoveryError as exc:
                    raise AgentError(str(exc)) from None

        seeds = await _resolve_seeds([*options.seeds, *_known_peers(store, options.region)], gossip_addr)
        saver = asyncio.create_task(agent.keep_saving_peers())
        if seeds:
            # The core retries the join with backoff until a seed answers.
            runtime.drive(lambda now: node.join(now, seeds))
        inventory_task = asyncio.create_task(agent.keep_publishing_inventory())
        artifact_task = asyncio.create_task(artifact_keeper.run(agent.artifacts_changed))
        log.info(
            "murmur agent ready: node %s region %s gossip %s api http://%s incarnation %d profile %s "
            "seeds %s",
            identity.node_id,
            options.region,
            gossip_addr,
            api_addr,
            node.incarnation,
            region_config.name,
            describe_seeds(seeds, mdns_interfaces),
        )
        await stop.wait()
        log.info("shutting down: leaving the mesh")
        saver.cancel()
        inventory_task.cancel()
        artifact_task.cancel()
        await asyncio.gather(saver, inventory_task, artifact_task, return_exceptions=True)
        runtime.drive(node.leave)
        await asyncio.sleep(LEAVE_LINGER_S)  # the runtime keeps driving: the leave goes out
        agent.save_peers()
    log.info("stopped cleanly")
    return 0


def own_regions(admission: Record, region: str) -> tuple[str, str] | None:
    """(this node's region, the region its invite names), for a refusal of its own admission."""
    invite = admission_invite(admission)
    return None if invite is None else (region, invite.region)


def _make_discovery(
    options: AgentOptions, token: JoinToken, agent: Agent, gossip_addr: str, api_addr: str
) -> Discovery | None:
    """The mDNS advertiser/browser on --mdns-interface (default: the --bind IP); None if off."""
    gossip_host, gossip_port = split_hostport(gossip_addr)
    interfaces = list(options.mdns_interfaces)
    if not interfaces:
        try:
            is_v4 = ipaddress.ip_address(gossip_host).version == 4
        except ValueError:
            is_v4 = False
        if not is_v4:
            log.warning(
                "mDNS is off: --bind host %s is not an IPv4 address; pass --mdns-interface with the "
                "LAN interface address to find peers automatically",
                gossip_host,
            )
            return None
        interfaces = [gossip_host]
    try:
        return Discovery(
            interfaces=interfaces,
            cluster_id=token.cluster_id,
            node_id=agent.node_id,
            region=options.region,
            gossip_host=gossip_host,
            gossip_port=gossip_port,
            api_port=split_hostport(api_addr)[1],
            on_peer=agent.on_discovered,
        )
    except DiscoveryError as exc:
        raise AgentError(str(exc)) from None


def _known_peers(store: Store, region: str) -> list[str]:
    """Addresses of peers seen in an earlier run, own region first (extra seeds)."""
    peers = sorted(store.peers(), key=lambda p: p.region != region)  # stable: recency within each
    return [p.addr for p in peers[:KNOWN_PEERS_AS_SEEDS_MAX]]
