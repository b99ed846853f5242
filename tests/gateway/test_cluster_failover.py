"""A Redis Cluster master fails over, freezes or is killed while requests flow through the gateway:
each request is served or refused with the documented retryable 503 (`shared_state_unavailable`),
never another error, and once the replica has taken over the gateway serves again without a restart
(README, *Running on Redis Cluster*).

Runs only against a cluster with replicas (CI's third pass, `.ci/redis-cluster`); the master failed
over is the one holding the device's rate-limit slot, which every request uses. The old master is
made master again afterwards (a killed one is restarted first), so the tests after this one see the
cluster as it was."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import ParamSpec, TypeVar

import orjson
import pytest
import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from redis.crc import key_slot

from gateway.policy import requests_key
from proxyproject.lib.redis import client_url, cluster_configured
from tests.gateway.conftest import bearer, call_gateway
from tests.support import MESSAGE_BODY, apoll_until, enroll_device, new_device_id, poll_until
from tests.usage.cast import identity_with
from tokens.models import Device
from usage.models import UsageRecord
from usage.writer import MAX_BACKOFF_SECONDS

pytestmark = pytest.mark.redis

FAILOVER_SECONDS = 30.0  # the whole failover, catching up included, on a loaded 2-core machine
AFTER_FAILOVER_REQUESTS = 20
RELEARN_SECONDS = 10.0  # from the promotion to the first request served again, when the old master is dead
# The traffic loops run as fast as the gateway answers for as long as the failover takes: the rate limit
# (still checked on every request, on the cluster) must not be what refuses them.
UNLIMITED = 1_000_000
P = ParamSpec("P")
T = TypeVar("T")


def off_the_database_thread(wait: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """A blocking wait on the cluster, run in a thread of its own. `sync_to_async`'s default runs it in
    the one thread every database read of this process queues in: a wait there longer than DB_TIMEOUT
    would hold the in-process gateway's device reads past their deadline, and they would get
    503 database_unavailable for a fault that is the test's, not the cluster's."""
    return sync_to_async(wait, thread_sensitive=False)


@dataclass(frozen=True)
class ClusterNode:
    node_id: str
    port: int
    master_id: str | None  # None for a master
    slots: tuple[tuple[int, int], ...]


def cluster_nodes(port: int) -> list[ClusterNode]:
    reply = redis.Redis(host="127.0.0.1", port=port, decode_responses=True).execute_command("CLUSTER NODES")
    return [
        ClusterNode(
            node["node_id"],
            int(address.rpartition(":")[2]),
            None if node["master_id"] == "-" else node["master_id"],
            tuple((int(low), int(high)) for low, high in node["slots"]),
        )
        for address, node in reply.items()
    ]


def seed_port() -> int:
    return redis.Redis.from_url(client_url(settings.REDIS_URL)).connection_pool.connection_kwargs["port"]


def master_and_replica_of(slot: int) -> tuple[ClusterNode, ClusterNode]:
    nodes = cluster_nodes(seed_port())
    [master] = [node for node in nodes if node.master_id is None and any(low <= slot <= high for low, high in node.slots)]
    replicas = [node for node in nodes if node.master_id == master.node_id]
    if not replicas:
        pytest.skip("the cluster has no replica to fail over to (.ci/redis-cluster starts one per master)")
    return master, replicas[0]


def role_of(port: int) -> str:
    return redis.Redis(host="127.0.0.1", port=port).execute_command("ROLE")[0].decode()


def replica_in_sync(port: int) -> bool:
    info = redis.Redis(host="127.0.0.1", port=port).info("replication")
    return info.get("master_link_status") == "up"


def fail_over_to(replica_port: int, *, takeover: bool = False) -> None:
    """A manual failover: the master stops writes, the replica catches up and the masters vote it in.
    A takeover skips the vote, which the masters refuse for the same slots within twice the node
    timeout of the last one: it puts the old master back at once, with no traffic to lose."""
    poll_until(lambda: replica_in_sync(replica_port), FAILOVER_SECONDS, "the replica to be in sync")
    redis.Redis(host="127.0.0.1", port=replica_port).execute_command("CLUSTER FAILOVER", *(["TAKEOVER"] if takeover else []))
    poll_until(lambda: role_of(replica_port) == "master", FAILOVER_SECONDS, f"{replica_port} to be master", interval=0.1)


def node_views(ports: list[int]) -> dict[int, dict[str, tuple[str, str, str, tuple[tuple[int, int], ...]]]]:
    """What each node says of every node: its role, its master, its config epoch and its slots."""
    views = {}
    for port in ports:
        reply = redis.Redis(host="127.0.0.1", port=port, decode_responses=True).execute_command("CLUSTER NODES")
        views[port] = {
            node["node_id"]: (
                "master" if "master" in node["flags"] else "replica",
                node["master_id"],
                node["epoch"],
                tuple((int(low), int(high)) for low, high in node["slots"]),
            )
            for node in reply.values()
        }
    return views


def cluster_settled() -> bool:
    """Every node answers, sees the cluster ok, and every node's view of every node is the same, config
    epochs included; every master with slots has a replica in sync. A node whose config epoch the
    others have not yet learnt (right after a takeover, which raises it without a vote) can make a
    later election's winner lose: the others keep the slots with the higher epoch, on a node that may
    be dead by then."""
    nodes = cluster_nodes(seed_port())
    views = node_views([node.port for node in nodes])
    first = views[seed_port()]
    masters = {node_id for node_id, (role, _, _, slots) in first.items() if role == "master" and slots}
    replicas = [node for node in nodes if first[node.node_id][0] == "replica"]
    return (
        all(view == first for view in views.values())
        and all(redis.Redis(host="127.0.0.1", port=node.port).cluster("INFO")["cluster_state"] == "ok" for node in nodes)
        and masters <= {first[replica.node_id][1] for replica in replicas}
        and all(replica_in_sync(replica.port) for replica in replicas)
    )


def owner_everywhere(slot: int, node_id: str, ports: list[int]) -> bool:
    """Every one of these nodes maps the slot to that node: the cluster has agreed on its master."""
    for view in node_views(ports).values():
        owners = [
            owner
            for owner, (role, _, _, slots) in view.items()
            if role == "master" and any(low <= slot <= high for low, high in slots)
        ]
        if owners != [node_id]:
            return False
    return True


@pytest.fixture
def cluster_with_replicas() -> Iterator[None]:
    """Each test starts, and leaves, with the cluster settled (`cluster_settled`): right after a
    failover back, the seed may still list the old roles, and a test reading them would fail over the
    wrong node."""
    if not settings.REDIS_URL or not cluster_configured():
        pytest.skip("needs a Redis Cluster (CI's third pass)")
    if not any(node.master_id for node in cluster_nodes(seed_port())):
        pytest.skip("the cluster has no replica to fail over to (.ci/redis-cluster starts one per master)")
    poll_until(cluster_settled, FAILOVER_SECONDS, "the cluster to be settled")
    yield
    poll_until(cluster_settled, FAILOVER_SECONDS, "the cluster to be settled again")


def outcome_of(status: int, body: bytes) -> str:
    if status == 200:
        return "served"
    error = orjson.loads(body).get("error", {})
    return f"{status} {error.get('details', {}).get('error_code', error.get('type'))}"


async def test_a_master_failing_over_mid_traffic_is_served_or_refused_retryably_and_recovers(
    cluster_with_replicas, fake_upstream, transactional_db
):
    device_id = new_device_id()
    token = await enroll_device(device_id=device_id, daily_spend_cap_usd=Decimal("100.00"), requests_per_window=UNLIMITED)
    device_pk = await sync_to_async(lambda: Device.objects.get(device_id=device_id).pk)()
    slot = key_slot(requests_key(identity_with(device_pk=device_pk)).encode())
    master, replica = await off_the_database_thread(master_and_replica_of)(slot)

    outcomes: Counter[str] = Counter()
    failing_over = True

    async def traffic() -> None:
        while failing_over:
            answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY)
            outcomes[outcome_of(answer.status, answer.body)] += 1

    senders = [asyncio.create_task(traffic()) for _ in range(4)]
    try:
        await asyncio.sleep(0.2)  # requests are flowing before the failover starts
        started = time.monotonic()
        await off_the_database_thread(fail_over_to)(replica.port)
        took = time.monotonic() - started
        failing_over = False
        await asyncio.gather(*senders)
        after = [
            await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY)
            for _ in range(AFTER_FAILOVER_REQUESTS)
        ]
    finally:
        failing_over = False
        await asyncio.gather(*senders, return_exceptions=True)
        await off_the_database_thread(fail_over_to)(master.port, takeover=True)  # the cluster as it was

    assert set(outcomes) <= {"served", "503 shared_state_unavailable"}, outcomes
    assert [outcome_of(answer.status, answer.body) for answer in after] == ["served"] * AFTER_FAILOVER_REQUESTS
    print(f"failover of {master.port} to {replica.port} in {took:.2f} s; requests during it: {dict(outcomes)}")


def wait_until_promoted_everywhere(slot: int, master: ClusterNode, replica: ClusterNode) -> None:
    """Until every live node maps the slot to the replica: the replica's own ROLE says master before
    the others have accepted it, and they may not (see `cluster_settled`)."""
    alive = [node.port for node in cluster_nodes(replica.port) if node.port != master.port]
    poll_until(
        lambda: owner_everywhere(slot, replica.node_id, alive), FAILOVER_SECONDS, "the cluster to agree on the promoted replica"
    )


def node_timeout_seconds(port: int) -> float:
    config = redis.Redis(host="127.0.0.1", port=port, decode_responses=True).config_get("cluster-node-timeout")
    return int(str(config["cluster-node-timeout"])) / 1000


def process_of(port: int) -> int:
    return int(redis.Redis(host="127.0.0.1", port=port).info("server")["process_id"])


async def device_on_a_master_with_its_replica_in_sync() -> tuple[str, int, ClusterNode, ClusterNode]:
    """A new device's token, its rate-limit slot (which every request uses), the master holding that
    slot and its replica, once in sync."""
    device_id = new_device_id()
    token = await enroll_device(device_id=device_id, requests_per_window=UNLIMITED)
    device_pk = await sync_to_async(lambda: Device.objects.get(device_id=device_id).pk)()
    slot = key_slot(requests_key(identity_with(device_pk=device_pk)).encode())
    master, replica = await off_the_database_thread(master_and_replica_of)(slot)
    await off_the_database_thread(poll_until)(
        lambda: replica_in_sync(replica.port), FAILOVER_SECONDS, "the replica to be in sync"
    )
    return token, slot, master, replica


async def test_a_master_that_stops_answering_is_refused_retryably_until_its_replica_takes_over(
    cluster_with_replicas, fake_upstream, transactional_db
):
    """The master is frozen (SIGSTOP), as a hung or unreachable node is: the other masters notice it
    after the cluster's node timeout and promote its replica. Requests on its slots meanwhile get
    the retryable 503; once the replica is master the gateway serves them again, with no restart."""
    token, slot, master, replica = await device_on_a_master_with_its_replica_in_sync()
    frozen = process_of(master.port)

    outcomes: Counter[str] = Counter()
    # Printed beside the README's "about 8 s" before a 503 ((1 + CLUSTER_COMMAND_RETRIES) × REDIS_SOCKET_TIMEOUT):
    # a request waits on the frozen master until then, or until the replica has taken over.
    longest_wait = 0.0
    promoted = False

    async def traffic() -> None:
        nonlocal longest_wait
        while not promoted:
            sent = time.monotonic()
            answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY)
            outcomes[outcome_of(answer.status, answer.body)] += 1
            longest_wait = max(longest_wait, time.monotonic() - sent)

    os.kill(frozen, signal.SIGSTOP)
    senders = [asyncio.create_task(traffic()) for _ in range(4)]
    try:
        started = time.monotonic()
        await off_the_database_thread(wait_until_promoted_everywhere)(slot, master, replica)
        took = time.monotonic() - started
        promoted = True
        await asyncio.gather(*senders)
        after = [
            await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY)
            for _ in range(AFTER_FAILOVER_REQUESTS)
        ]
    finally:
        promoted = True
        os.kill(frozen, signal.SIGCONT)  # it learns it was replaced and becomes the replica
        await asyncio.gather(*senders, return_exceptions=True)
        await off_the_database_thread(poll_until)(
            lambda: role_of(master.port) == "slave", FAILOVER_SECONDS, "the old master to rejoin"
        )
        await off_the_database_thread(fail_over_to)(master.port, takeover=True)

    assert set(outcomes) <= {"served", "503 shared_state_unavailable"}, outcomes
    assert [outcome_of(answer.status, answer.body) for answer in after] == ["served"] * AFTER_FAILOVER_REQUESTS
    print(
        f"{master.port} frozen, {replica.port} master after {took:.2f} s; requests meanwhile: {dict(outcomes)}; "
        f"the longest request took {longest_wait:.2f} s"
    )


# What `.ci/redis-cluster` starts a node with, read back from the node so a killed one restarts as it was.
LAUNCH_OPTIONS = (
    "port",
    "bind",
    "cluster-enabled",
    "cluster-config-file",
    "cluster-node-timeout",
    "dir",
    "save",
    "appendonly",
    "logfile",
    "pidfile",
)


def launch_command(port: int) -> list[str]:
    """`redis-server` as the script runs it (the node's own `executable` is its argv[0] joined to its
    working directory, which names no file when it was found on the PATH)."""
    config = redis.Redis(host="127.0.0.1", port=port, decode_responses=True).config_get("*")
    command = [shutil.which("redis-server") or "redis-server", "--daemonize", "yes"]
    for name in LAUNCH_OPTIONS:
        command += [f"--{name}", *(config[name].split() if name == "bind" else [config[name]])]
    return command


async def test_a_master_killed_for_good_is_replaced_by_its_replica_and_the_gateway_serves_and_records_again(
    cluster_with_replicas, fake_upstream, transactional_db
):
    """The master is SIGKILLed and stays dead until every assertion is done: the cluster promotes its
    replica by itself; requests meanwhile are served or get the retryable 503; then the gateway serves
    and writes usage again, with no restart. The dead node is restarted afterwards (same port, same
    nodes.conf), rejoins as a replica, and is made master again."""
    token, slot, master, replica = await device_on_a_master_with_its_replica_in_sync()
    relaunch = await off_the_database_thread(launch_command)(master.port)
    killed = process_of(master.port)
    # A master votes for a replica of one master at most once per twice the node timeout: right after
    # the tests before this one failed this master over, the votes for its replica would be refused,
    # and the replica would only try again later than the test waits.
    await asyncio.sleep(2 * await off_the_database_thread(node_timeout_seconds)(master.port))

    outcomes: Counter[str] = Counter()
    promoted = dead = False

    async def traffic() -> None:
        while not promoted:
            answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY)
            outcomes[outcome_of(answer.status, answer.body)] += 1

    senders = [asyncio.create_task(traffic()) for _ in range(4)]
    try:
        await asyncio.sleep(0.2)  # requests are flowing when the master dies
        os.kill(killed, signal.SIGKILL)
        dead = True
        started = time.monotonic()
        await off_the_database_thread(wait_until_promoted_everywhere)(slot, master, replica)
        took = time.monotonic() - started
        promoted = True
        await asyncio.gather(*senders)

        async def served_again() -> bool:
            answer = await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY)
            outcomes[outcome_of(answer.status, answer.body)] += 1
            return answer.status == 200

        # No MOVED reply points the client at the new master (the old one is dead): it relearns the slot
        # map on its next topology refresh, at most one a second (redis-py's default).
        await apoll_until(served_again, RELEARN_SECONDS, "the gateway to serve again", interval=0.05)
        relearned = time.monotonic() - started
        after = [
            await call_gateway("POST", "/v1/messages", headers=bearer(token), body=MESSAGE_BODY)
            for _ in range(AFTER_FAILOVER_REQUESTS)
        ]
        served_after = sorted(answer.headers["x-gateway-request-id"] for answer in after if answer.status == 200)

        def recorded() -> list[str]:
            return sorted(UsageRecord.objects.filter(request_id__in=served_after).values_list("request_id", flat=True))

        async def all_recorded() -> list[str]:
            ids = await sync_to_async(recorded)()
            return ids if ids == served_after else []

        # Written by this process's own usage writer, unasked: it backed off while the master was dead.
        written = await apoll_until(all_recorded, MAX_BACKOFF_SECONDS + FAILOVER_SECONDS, "the usage records", interval=0.2)
        recorded_after = time.monotonic() - started
    finally:
        promoted = True
        await asyncio.gather(*senders, return_exceptions=True)
        if dead:
            subprocess.run(relaunch, check=True)
            await off_the_database_thread(poll_until)(
                lambda: role_of(master.port) == "slave", FAILOVER_SECONDS, "the killed master to rejoin"
            )
            await off_the_database_thread(fail_over_to)(master.port, takeover=True)

    assert set(outcomes) <= {"served", "503 shared_state_unavailable"}, outcomes
    assert [outcome_of(answer.status, answer.body) for answer in after] == ["served"] * AFTER_FAILOVER_REQUESTS
    assert len(served_after) == AFTER_FAILOVER_REQUESTS and written == served_after
    print(
        f"{master.port} killed, {replica.port} master after {took:.2f} s, served again after {relearned:.2f} s,"
        f" usage written again after {recorded_after:.2f} s;"
        f" requests meanwhile: {dict(outcomes)}"
    )
