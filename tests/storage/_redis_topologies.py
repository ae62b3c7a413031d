"""Private Redis topologies for the tests: a 6-node Redis Cluster and a Sentinel group.

Both run as ``redis-server`` processes on free ports chosen at run time, keep
nothing on disk but their config (``--save ''``, no append-only file), and
are stopped by :meth:`close`. A test may SIGKILL a primary
(:meth:`RedisClusterNodes.kill_primary`, :meth:`SentinelGroup.kill_primary`);
:meth:`heal` restarts what was killed (it rejoins as a replica) and waits
until the topology is whole again, so the next test finds it healthy.

The session-scoped fixtures that start them are in ``tests/storage/conftest.py``.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from tests.helpers import free_port
from tests.storage._redis_server import PROBE_ONCE, RedisProcess, redis_server_binary

# One node answers PING, CLUSTER INFO... within this.
_CLIENT_TIMEOUT = 1.0


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (a port picked twice is picked again)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _wait(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {within:g}s")
        time.sleep(0.02)


def _info(port: int, section: str) -> dict[str, str]:
    """``INFO section`` (``CLUSTER INFO`` for ``"cluster-info"``) as a dict; {} when down."""
    client = redis.Redis(
        port=port,
        socket_timeout=_CLIENT_TIMEOUT,
        socket_connect_timeout=_CLIENT_TIMEOUT,
        retry=PROBE_ONCE,
        decode_responses=True,
    )
    try:
        if section == "cluster-info":
            # redis-py parses CLUSTER INFO into a dict already.
            return {str(k): str(v) for k, v in client.execute_command("CLUSTER INFO").items()}
        return {k: str(v) for k, v in client.info(section).items()}
    except redis.RedisError:
        return {}
    finally:
        client.close()


def _flags(described: dict[str, object]) -> list[str]:
    """A sentinel's flags of a node (redis-py gives a list, or a comma-separated string)."""
    flags = described.get("flags", "")
    if isinstance(flags, list | tuple | set):
        return [str(f) for f in flags]
    return str(flags).split(",")


class RedisClusterNodes:
    """A local Redis Cluster: 3 primaries with one replica each, on free ports.

    ``startup_seconds`` is how long :meth:`start` took (nodes up to
    ``cluster_state:ok`` with every replica in sync).
    """

    PRIMARIES = 3

    def __init__(self, workdir: Path) -> None:
        self.cli = shutil.which("redis-cli") or str(
            Path(redis_server_binary()).with_name("redis-cli")
        )
        ports = _free_ports(12)
        self.nodes = [
            RedisProcess(
                workdir / f"node-{port}",
                port,
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    str(bus),
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--repl-diskless-sync-delay",
                    "0",
                ],
            )
            for port, bus in zip(ports[:6], ports[6:], strict=True)
        ]
        self.startup_seconds = 0.0

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> None:
        started = time.monotonic()
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_answers()
        created = subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed:\n{created.stdout}{created.stderr}"
            )
        self.wait_healthy()
        self.startup_seconds = time.monotonic() - started

    def roles(self) -> dict[int, str]:
        """Each live node's role: ``master`` or ``slave``."""
        return {
            node.port: _info(node.port, "replication").get("role", "down")
            for node in self.nodes
            if node.alive
        }

    def primaries(self) -> list[int]:
        return [port for port, role in self.roles().items() if role == "master"]

    def healthy(self) -> bool:
        """Every node up and agreeing the cluster is ok; 3 primaries, each with a synced replica."""
        if not all(node.alive for node in self.nodes):
            return False
        for node in self.nodes:
            if _info(node.port, "cluster-info").get("cluster_state") != "ok":
                return False
            replication = _info(node.port, "replication")
            role = replication.get("role")
            if role == "slave" and replication.get("master_link_status") != "up":
                return False
            if role == "master" and int(replication.get("connected_slaves", "0")) < 1:
                return False
        return len(self.primaries()) == self.PRIMARIES

    def wait_healthy(self, within: float = 30.0) -> None:
        _wait(self.healthy, within, "the cluster reaching cluster_state:ok with replicas in sync")

    def kill_primary(self, port: int | None = None) -> int:
        """SIGKILL a primary (the first one, or the one on ``port``); return its port."""
        target = port if port is not None else self.primaries()[0]
        next(node for node in self.nodes if node.port == target).kill()
        return target

    def wait_promoted(self, killed: int, within: float = 30.0) -> None:
        """Wait until a replica of the killed primary took over and the cluster is ok again."""

        def promoted() -> bool:
            live = [n.port for n in self.nodes if n.alive]
            if len(self.primaries()) < self.PRIMARIES:
                return False
            return all(_info(p, "cluster-info").get("cluster_state") == "ok" for p in live)

        _wait(promoted, within, f"a replica replacing the killed primary {killed}")

    def heal(self, within: float = 30.0) -> None:
        """Restart killed nodes (they rejoin as replicas) and wait until the cluster is whole."""
        for node in self.nodes:
            if not node.alive:
                node.launch()
        for node in self.nodes:
            node.wait_answers()
        self.wait_healthy(within)

    def flush(self) -> None:
        """Empty every primary (between tests that want a clean cluster)."""
        for port in self.primaries():
            client = redis.Redis(port=port, socket_timeout=5)
            try:
                client.flushall()
            finally:
                client.close()

    def close(self) -> None:
        for node in self.nodes:
            node.kill()


class SentinelGroup:
    """One primary, one replica and three sentinels watching them, on free ports.

    The service is called ``SERVICE``; a sentinel declares the primary down
    after one second without an answer, and two of three must agree.
    """

    SERVICE = "botkit"

    def __init__(self, workdir: Path) -> None:
        primary, replica, *sentinels = _free_ports(5)
        self.primary = RedisProcess(
            workdir / "primary", primary, ["--repl-diskless-sync-delay", "0"]
        )
        self.replica = RedisProcess(
            workdir / "replica",
            replica,
            ["--repl-diskless-sync-delay", "0", "--replicaof", "127.0.0.1", str(primary)],
        )
        # Each sentinel is told its own id and its peers' (and the replica) up front:
        # found on their own, they take a few seconds of hello messages to agree.
        ids = {port: secrets.token_hex(20) for port in sentinels}
        self.sentinels: list[RedisProcess] = []
        for port in sentinels:
            home = workdir / f"sentinel-{port}"
            home.mkdir(parents=True, exist_ok=True)
            conf = home / "sentinel.conf"
            peers = "".join(
                f"sentinel known-sentinel {self.SERVICE} 127.0.0.1 {other} {ids[other]}\n"
                for other in sentinels
                if other != port
            )
            # Sentinels rewrite their config file (known replicas, epochs): one each.
            conf.write_text(
                f"sentinel myid {ids[port]}\n"
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
                f"sentinel failover-timeout {self.SERVICE} 5000\n"
                f"sentinel parallel-syncs {self.SERVICE} 1\n"
                f"sentinel known-replica {self.SERVICE} 127.0.0.1 {replica}\n" + peers
            )
            self.sentinels.append(RedisProcess(home, port, ["--sentinel"], config=conf))
        self.startup_seconds = 0.0

    @property
    def data_nodes(self) -> list[RedisProcess]:
        return [self.primary, self.replica]

    @property
    def url(self) -> str:
        """``redis+sentinel://`` naming all three sentinels and the service."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.SERVICE}/0"

    def start(self) -> None:
        started = time.monotonic()
        for node in (*self.data_nodes, *self.sentinels):
            node.launch()
        for node in (*self.data_nodes, *self.sentinels):
            node.wait_answers()
        self.wait_healthy()
        self.startup_seconds = time.monotonic() - started

    def current_primary(self) -> int | None:
        """The port the sentinels name as the primary (None while they disagree or are down)."""
        seen: set[int] = set()
        for sentinel in self.sentinels:
            if not sentinel.alive:
                continue
            client = redis.Redis(
                port=sentinel.port,
                socket_timeout=_CLIENT_TIMEOUT,
                socket_connect_timeout=_CLIENT_TIMEOUT,
                retry=PROBE_ONCE,
                decode_responses=True,
            )
            try:
                address = client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", self.SERVICE)
            except redis.RedisError:
                return None
            finally:
                client.close()
            if not address:
                return None
            seen.add(int(address[1]))
        return seen.pop() if len(seen) == 1 else None

    def healthy(self) -> bool:
        """All up; the sentinels agree on a primary that has a synced replica and knows it."""
        if not all(n.alive for n in (*self.data_nodes, *self.sentinels)):
            return False
        primary = self.current_primary()
        if primary is None:
            return False
        if _info(primary, "replication").get("role") != "master":
            return False
        other = next(n.port for n in self.data_nodes if n.port != primary)
        replication = _info(other, "replication")
        if replication.get("role") != "slave" or replication.get("master_link_status") != "up":
            return False
        if replication.get("master_port") != str(primary):
            return False
        # Every sentinel sees the replica and the other two sentinels (so they can vote).
        for sentinel in self.sentinels:
            client = redis.Redis(
                port=sentinel.port,
                socket_timeout=_CLIENT_TIMEOUT,
                decode_responses=True,
                retry=PROBE_ONCE,
            )
            try:
                master = client.sentinel_master(self.SERVICE)
                replicas = client.sentinel_slaves(self.SERVICE)
            except redis.RedisError:
                return False
            finally:
                client.close()
            # The replica must be one the sentinels would promote: seen up, linked.
            if not any(
                int(r.get("port", 0)) == other
                and not ({"s_down", "o_down", "disconnected"} & set(_flags(r)))
                and r.get("master-link-status") == "ok"
                for r in replicas
            ):
                return False
            if (
                int(master.get("num-slaves", 0)) < 1
                or int(master.get("num-other-sentinels", 0)) < 2
            ):
                return False
            if {"s_down", "o_down", "disconnected"} & set(_flags(master)):
                return False
        return True

    def wait_healthy(self, within: float = 30.0) -> None:
        _wait(
            self.healthy, within, "the Sentinel group agreeing on a primary with a synced replica"
        )

    def kill_primary(self) -> int:
        """SIGKILL the current primary; return its port."""
        port = self.current_primary()
        assert port is not None, "the sentinels do not agree on a primary"
        next(n for n in self.data_nodes if n.port == port).kill()
        return port

    def wait_promoted(self, killed: int, within: float = 30.0) -> int:
        """Wait until the sentinels name another primary that accepts writes; return its port."""
        found: list[int] = []

        def promoted() -> bool:
            port = self.current_primary()
            if port is None or port == killed:
                return False
            if _info(port, "replication").get("role") != "master":
                return False
            found.append(port)
            return True

        _wait(promoted, within, f"the sentinels promoting a replica of {killed}")
        return found[-1]

    def heal(self, within: float = 30.0) -> None:
        """Restart a killed node as a replica of the current primary; wait until whole.

        (Left to themselves, the sentinels would turn a restarted primary into
        a replica too, but only at their next 10 s check.)
        """
        primary = self.current_primary()
        for node in self.sentinels:
            if not node.alive:
                node.launch()
        for node in self.data_nodes:
            if not node.alive:
                if primary is None or primary == node.port:
                    node.launch()
                else:
                    node.launch("--replicaof", "127.0.0.1", str(primary))
        for node in (*self.data_nodes, *self.sentinels):
            node.wait_answers()
        self.wait_healthy(within)

    def flush(self) -> None:
        port = self.current_primary()
        if port is None:
            return
        client = redis.Redis(port=port, socket_timeout=5)
        try:
            client.flushall()
        finally:
            client.close()

    def close(self) -> None:
        for node in (*self.sentinels, *self.data_nodes):
            node.kill()
