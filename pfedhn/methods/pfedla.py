"""pFedLA and HeurpFedLA: layer-wise personalized aggregation weighted by per-client hypernetworks.

Paper: https://arxiv.org/abs/2205.03993 (Ma et al., CVPR 2022)
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from logging import WARNING
from typing import Any

import numpy as np
import torch
from flwr.common import Scalar
from flwr.common.logger import log
from omegaconf import DictConfig
from torch import nn

from pfedhn import config
from pfedhn.aggregation import StoredModels
from pfedhn.checks import Checks, non_negative, non_negative_int, positive, positive_int
from pfedhn.errors import ConfigError
from pfedhn.hypernetwork import LayerWeights, normalize_rows, step_toward_trained
from pfedhn.method import Method, MethodSpec, TableRows
from pfedhn.methods.pfedla_report import ALPHA
from pfedhn.model import TargetCNN
from pfedhn.model import layers as target_layers
from pfedhn.protocol import ClientModel
from pfedhn.schedule import Schedule


class PFedLA(Method):
    """Layer-wised personalized aggregation.

    The server keeps every client's latest model θ_j (``StoredModels``) and one
    small hypernetwork HN_i per client (``LayerWeights``), which gives per layer l
    the weights α_i^l ≥ 0, Σ_j α_ij^l = 1. Client i receives
    θ̄_i^l = Σ_j α_ij^l θ_j^l, built from the models as they stood at the start of
    the round, trains it and returns Δ_i = θ_trained − θ̄_i. The server descends
    ½‖θ̄_i(ψ_i) − θ_trained‖² in HN_i's parameters ψ_i: its gradient is the
    vector–Jacobian product (∂θ̄_i/∂ψ_i)ᵀ(−Δ_i), one step of HN_i's optimizer
    (``step_toward_trained``, pFedHN's step, unclipped), and then sets θ_i ← θ_trained.
    Every HN_i update of a round reads the same stored models, so the order of the
    clients within a round does not matter. A layer's weight and bias share one α.

    HeurpFedLA (``local_layers`` = K > 0): for client i the K layers with the
    largest self-weight α_ii^l stay local: the client keeps and trains its own
    copy (``ClientModel.keep``), which is neither sent nor uploaded (sent once if
    the client does not hold it yet) and is left out of the hypernetwork update;
    meanwhile the server's copy of such a layer, which the other clients aggregate,
    is the last one the client uploaded. When α moves a held layer out of the top K,
    the client trains it one more round from its own copy and returns its change
    against the server's copy (``ClientModel.release``), so its training while the
    layer was local reaches the server; that round leaves it out of the hypernetwork
    update too, and from the next one it is aggregated.

    Parameters
    ----------
    models : StoredModels
        Every client's model, all starting from one shared initialization.
    layers : dict[str, list[str]]
        Layer → names of its tensors, in the target's order (α has one row per layer).
    weights : nn.ModuleList
        One ``LayerWeights`` per client.
    optimizers : list[torch.optim.Optimizer]
        One per client, stepping ``weights[i]``.
    local_layers : int (default: 0)
        HeurpFedLA's K; 0 is pFedLA.
    """

    def __init__(
        self,
        models: StoredModels,
        layers: dict[str, list[str]],
        weights: nn.ModuleList,
        optimizers: list[torch.optim.Optimizer],
        local_layers: int = 0,
    ) -> None:
        self.client_state = local_layers > 0
        self.num_clients = len(weights)
        if not 0 <= local_layers <= len(layers):
            raise ValueError(f"local_layers must be in 0..{len(layers)}, got {local_layers}")
        if local_layers == len(layers):
            log(
                WARNING,
                "HeurpFedLA with every layer local (K=%d) is Local training: nothing is aggregated",
                local_layers,
            )
        self.models = models
        self.layers = layers
        self.weights = weights
        self.optimizers = optimizers
        self.local_layers = local_layers
        self.holds: dict[int, tuple[str, ...]] = {}  # client → tensors it keeps (its last fit's local layers)
        self._local: dict[int, tuple[list[str], list[str]]] = {}  # client → (local, released) layers of its fit
        self.releases = [0] * self.num_clients  # client → fits in which a held layer left its top K

    def __repr__(self) -> str:
        size = sum(p.numel() for p in self.weights[0].parameters())
        layers = list(self.layers)
        return f"PFedLA(local_layers={self.local_layers}, layers={layers}, hn_params={size})"

    # ------------------------------------------------------------------ the method

    def alpha(self, client: int) -> torch.Tensor:
        """α_client: (layers, num_clients), rows summing to 1 (differentiable in HN_client)."""
        return normalize_rows(self.weights[client](), client)

    def local_layers_of(self, client: int, alpha: torch.Tensor) -> list[str]:
        """HeurpFedLA: the ``local_layers`` layers with the largest normalized self-weight α_ii^l
        (ties to the earlier layer), in the target's order."""
        if self.local_layers == 0:
            return []
        own = alpha[:, client].detach()
        order = sorted(range(len(own)), key=lambda layer: (-float(own[layer]), layer))[: self.local_layers]
        return [name for index, name in enumerate(self.layers) if index in order]

    def aggregate(self, alpha: torch.Tensor, skip: list[str]) -> dict[str, torch.Tensor]:
        """θ̄_client for every tensor of the layers not in ``skip``: Σ_j α^l_j θ_j."""
        per_tensor = {
            name: alpha[index]
            for index, (layer, names) in enumerate(self.layers.items())
            if layer not in skip
            for name in names
        }
        return self.models.weighted_sum(per_tensor)

    # ------------------------------------------------------------------ hooks

    @torch.no_grad()
    def client_model(self, client: int, server_round: int, training: bool) -> ClientModel:
        """θ̄_client for the aggregated layers; HeurpFedLA: its local layers kept (sent once), and a
        held layer that left the top K released (training) or still taken from the client (evaluation)."""
        alpha = self.alpha(client)
        local = self.local_layers_of(client, alpha)
        held = self.holds.get(client, ())
        released = [layer for layer, names in self.layers.items() if layer not in local and set(names) & set(held)]
        aggregated = self.aggregate(alpha, skip=local + released)
        keep = [name for layer in local for name in self.layers[layer]]
        released_names = [name for layer in released for name in self.layers[layer]]
        own = self.models.of(client)
        arrays = {}
        for names in self.layers.values():
            for name in names:
                if name in aggregated:
                    arrays[name] = aggregated[name].cpu().numpy()
                elif name not in held or (training and name in released_names):
                    arrays[name] = own[name].cpu().numpy()  # just made local (sent once), or released
        if not training:
            return ClientModel(arrays, keep=tuple(keep + released_names))  # the client's own copies
        self._local[client] = (local, released)
        return ClientModel(arrays, keep=tuple(keep), release=tuple(released_names))

    def apply_updates(
        self,
        server_round: int,
        updates: dict[int, dict[str, np.ndarray]],
        num_examples: dict[int, int] | None = None,
    ) -> dict[str, Scalar]:
        """Step each client's hypernetwork on its Δ, then store every trained model (``num_examples``
        is not used: each client has its own hypernetwork)."""
        trained: dict[int, dict[str, torch.Tensor]] = {}
        norms = []
        for client, deltas in sorted(updates.items()):
            local, released = self._local.pop(client)
            changes = {n: torch.from_numpy(d).to(self.models.device) for n, d in deltas.items()}
            own = self.models.of(client)
            returned_whole = {n: own[n] + changes.pop(n) for layer in released for n in self.layers[layer]}
            norm, trained[client] = self.hypernetwork_step(client, changes, skip=local + released)
            trained[client].update(returned_whole)
            self.releases[client] += bool(released)
            norms.append(norm)
            self.holds[client] = tuple(name for layer in local for name in self.layers[layer])
        for client, tensors in trained.items():
            self.models.set(client, tensors)
        return {"hypernetwork_grad_norm": float(np.mean(norms))}

    def hypernetwork_step(
        self, client: int, deltas: dict[str, torch.Tensor], skip: list[str]
    ) -> tuple[float, dict[str, torch.Tensor]]:
        """One step of HN_client from Δ (its layers in ``skip`` left out), against the stored
        models as they are; returns the gradient norm and θ_trained of the uploaded tensors."""

        def aggregated(c: int, names: Collection[str]) -> Mapping[str, torch.Tensor]:
            return self.aggregate(self.alpha(c), skip=skip)

        norm, generated = step_toward_trained(self.optimizers[client], aggregated, {client: deltas})
        return norm, {n: generated[client][n] + deltas[n] for n in generated[client]}

    def clients_failed(self, clients: list[int]) -> None:
        """A client whose fit failed may have lost its local layers (a restarted node comes back
        without ``Context.state``) or hold bad ones (a rejected result): the server sends its own
        copies of them again, and the client's copies, if it still has them, are replaced by those
        (what it trained since it last uploaded them is lost)."""
        for client in clients:
            self.holds.pop(client, None)

    @torch.no_grad()
    def report(self) -> dict[str, Any]:
        """``alpha``: layer → α as a (client, client) nested list; row i is α_i. HeurpFedLA:
        ``releases``, per client the fits so far in which a held layer left its top K."""
        alphas = torch.stack([self.alpha(client) for client in range(self.num_clients)])  # (clients, layers, clients)
        alpha = {layer: alphas[:, index].tolist() for index, layer in enumerate(self.layers)}
        report: dict[str, Any] = {"alpha": alpha}
        if self.local_layers:
            report["releases"] = list(self.releases)
        return report

    # ------------------------------------------------------------------ state

    def server_state(self) -> dict[str, Any]:
        """Stored models, hypernetworks, their optimizers and what each client keeps."""
        return {
            "models": self.models.state(),
            "weights": self.weights.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "holds": {str(c): ",".join(names) for c, names in self.holds.items()},
            "releases": list(self.releases),
        }

    def load_server_state(self, state: dict[str, Any]) -> None:
        self.models.load_state(state["models"])
        self.weights.load_state_dict(state["weights"])
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        self.holds = {int(c): tuple(n for n in names.split(",") if n) for c, names in state["holds"].items()}
        if "releases" not in state and self.local_layers:
            raise ConfigError(
                "resume",
                "this HeurpFedLA checkpoint predates the release of layers leaving the top K (commit f5df947); "
                "resume it with the package code it ran on",
            )
        self.releases = list(state.get("releases", [0] * self.num_clients))


def build(cfg: DictConfig, schedule: Schedule) -> PFedLA:
    """pFedLA (``method.local_layers=0``) or HeurpFedLA (K > 0) from the config.

    Every client's model starts from one target network drawn from ``torch``'s
    global RNG, then each client's hypernetwork: seed it first.
    """
    device, spec = config.device(cfg), config.model_spec(cfg)
    initial = {name: p.detach().to(device) for name, p in TargetCNN(spec).named_parameters()}
    layers = target_layers(spec)
    hn, server = cfg.method.hypernetwork, cfg.method.server
    weights = nn.ModuleList(
        LayerWeights(len(layers), cfg.num_clients, hn.embed_dim, hn.hidden_dim, hn.n_hidden)
        for _ in range(cfg.num_clients)
    ).to(device)
    optimizers = [torch.optim.SGD(w.parameters(), lr=server.lr, momentum=server.momentum) for w in weights]
    return PFedLA(StoredModels(initial, cfg.num_clients), layers, weights, optimizers, cfg.method.local_layers)


def checks(cfg: DictConfig) -> Checks:
    """pFedLA's keys; HeurpFedLA's K at most the target's number of layers."""
    count = len(target_layers(config.model_spec(cfg)))
    return {
        "method.local_layers": (
            lambda k: non_negative_int(k) and k <= count,
            f"a non-negative integer, at most the target's {count} layers (HeurpFedLA's K; 0: pFedLA)",
        ),
        "method.hypernetwork.embed_dim": (positive_int, "a positive integer"),
        "method.hypernetwork.hidden_dim": (positive_int, "a positive integer"),
        "method.hypernetwork.n_hidden": (non_negative_int, "a non-negative integer"),
        "method.server.lr": (positive, "a positive number"),
        "method.server.momentum": (non_negative, "a non-negative number"),
    }


def row_key(cfg: Mapping[str, Any]) -> str:
    """``pfedla``, or ``heurpfedla_k<K>`` (also for ``method=pfedla method.local_layers=K``)."""
    k = cfg["method"].get("local_layers")
    return f"heurpfedla_k{k}" if k else "pfedla"


def heuristic_label(key: str) -> tuple[int, str] | None:
    """HeurpFedLA's rows, one per K, after pFedLA's."""
    match = re.fullmatch(r"heurpfedla_k(\d+)", key)
    return None if match is None else (int(match.group(1)), f"HeurpFedLA, K = {match.group(1)}")


SPEC = MethodSpec(
    build=build, checks=checks, rows=TableRows(row_key, {"pfedla": "pFedLA"}, heuristic_label, sections=(ALPHA,))
)
