"""Which Flower client holds which data partition.

Flower's node ids are random and its client list has no order, so before the first
round the driver asks every client for its partition id (``get_properties``) and keeps
the map; each instruction then carries the partition id it was made for, the client
refuses one that is not its own, and a reply is accepted only from the client that
holds the partition it claims.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from flwr.common import GetParametersIns, GetPropertiesIns, Scalar, parameters_to_ndarrays
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy

from pfedhn.faults import ClientFailure, RejectedResult
from pfedhn.protocol import KEPT, PARTITION_ID, PARTITIONS, split_names

ASKED_AT_ONCE = 32  # clients asked in parallel (identities, stores)


class PartitionRouter:
    """Partition id → ``ClientProxy`` of a federation of ``num_clients`` partitions.

    Parameters
    ----------
    num_clients : int
    connect_timeout : float
        Seconds to wait for one client per partition before the first round.
    """

    def __init__(self, num_clients: int, connect_timeout: float) -> None:
        self.num_clients = num_clients
        self.connect_timeout = connect_timeout
        self.proxies: dict[int, ClientProxy] = {}

    def connect(self, client_manager: ClientManager) -> dict[int, ClientProxy]:
        """Partition id → proxy, asked once of every client.

        ``num_clients`` and the federation must agree: the first clients to connect say
        how many partitions their nodes split the data into (node config ``num-partitions``),
        and a mismatch is a ``ClientFailure`` with one line saying what to change; so are
        fewer clients than ``num_clients`` within ``connect_timeout`` seconds, and more clients.
        """
        if self.proxies:
            return self.proxies
        # Flower's ServerApp compat layer registers the SuperNodes when the client manager is
        # asked for them (num_available, all, sample) and otherwise only every 5 s: ask first,
        # or wait_for sleeps until that loop's next pass (5 s at the start of every run).
        client_manager.num_available()
        client_manager.wait_for(1, timeout=self.connect_timeout)
        answers = ask_identities(list(client_manager.all().values()))
        node_counts = {n for _, n in answers.values() if n is not None}
        if node_counts - {self.num_clients}:
            raise ClientFailure(
                f"num_clients={self.num_clients}, but the SuperNodes split the data into {sorted(node_counts)} "
                "partitions (their node config num-partitions): make them agree, e.g. num_clients="
                f"{max(node_counts)} in the run config's overrides, or run {self.num_clients} SuperNodes "
                f'(simulation: --federation-config "num-supernodes={self.num_clients}")'
            )
        if not client_manager.wait_for(self.num_clients, timeout=self.connect_timeout):
            raise ClientFailure(
                f"num_clients={self.num_clients}, but only {client_manager.num_available()} clients (SuperNodes) "
                f"connected within faults.connect_timeout={self.connect_timeout:g} s: start one SuperNode "
                "per partition, or set num_clients to the number of SuperNodes"
            )
        proxies = list(client_manager.all().values())
        answers.update(ask_identities([p for p in proxies if p not in answers]))
        ids = sorted(partition for partition, _ in answers.values())
        if ids != list(range(self.num_clients)):
            raise ClientFailure(
                f"num_clients={self.num_clients} needs one client per partition 0..{self.num_clients - 1}; "
                f"the {len(ids)} connected clients hold partitions {ids}"
            )
        self.proxies = {partition: proxy for proxy, (partition, _) in answers.items()}
        return self.proxies

    def sender(self, proxy: ClientProxy, metrics: dict[str, Scalar]) -> int:
        """The partition of a reply; a ``RejectedResult`` unless ``proxy`` holds the one it claims."""
        client = int(metrics.get(PARTITION_ID, -1))
        if self.proxies.get(client) is not proxy:
            raise RejectedResult(f"a reply claims partition {client} but came from another client")
        return client

    def stores(self, clients: list[int]) -> dict[int, dict[str, np.ndarray]]:
        """What each of ``clients`` keeps (its store: names from ``get_properties``, arrays from
        ``get_parameters``), for a checkpoint."""

        def ask(client: int) -> dict[str, np.ndarray]:
            proxy, config = self.proxies[client], {PARTITION_ID: client}
            names = split_names(
                proxy.get_properties(GetPropertiesIns(config), timeout=None, group_id=0).properties[KEPT]
            )
            arrays = parameters_to_ndarrays(
                proxy.get_parameters(GetParametersIns(config), timeout=None, group_id=0).parameters
            )
            return dict(zip(names, arrays, strict=True))

        with ThreadPoolExecutor(max_workers=ASKED_AT_ONCE) as pool:
            return dict(zip(clients, pool.map(ask, clients)))


def ask_identities(proxies: list[ClientProxy]) -> dict[ClientProxy, tuple[int, int | None]]:
    """proxy → (its partition id, its node's number of partitions or None if it does not say)."""

    def ask(proxy: ClientProxy) -> tuple[int, int | None]:
        properties = proxy.get_properties(GetPropertiesIns(config={}), timeout=None, group_id=0).properties
        partitions = properties.get(PARTITIONS)
        return int(properties[PARTITION_ID]), None if partitions is None else int(partitions)

    with ThreadPoolExecutor(max_workers=ASKED_AT_ONCE) as pool:
        return dict(zip(proxies, pool.map(ask, proxies)))
