"""FedFomo (Zhang et al., ICLR 2021): first-order model optimization of each client's mix.

Paper: https://arxiv.org/abs/2012.08565; official code: github NVlabs/FedFomo.

Client i downloads some other clients' latest models θ_n and weighs each by how much it
improves its own validation loss per unit of distance from its baseline B_i (its model after
its last federated update, before training):
w_n = (L_i(B_i) − L_i(θ_n)) / ‖θ_n − B_i‖, clipped at 0 and normalized; its new model is
B_i + Σ_n w_n (θ_n − B_i), or B_i itself if no candidate improves (the official code's
revert), which it then trains. The candidates are its own latest trained model and
``candidates`` others from the last round's participants, picked ε-greedily by an affinity
row P_i that adds up each candidate's w_n / |Σ w| (official code; ε_t = max(ε_0 − (t − 1)·decay, 0) in round t).
As the official code: L1 distance by default, baseline = the pre-training model.
Choices where it is silent or differs (EXTENDED_README, "FedAMP and FedFomo"): the weights
use the validation split every method has; a client is evaluated with its latest trained
model; no cluster-average candidates (the official code's extra ``num_federations``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flwr.common import Scalar
from omegaconf import DictConfig
from torch import nn

from pfedhn import config
from pfedhn.aggregation import StoredModels, arrays
from pfedhn.checks import non_negative, positive_int
from pfedhn.global_average import initial_weights
from pfedhn.method import Method, MethodSpec, TableRows, by_name
from pfedhn.protocol import ClientModel, ClientSide
from pfedhn.report import pair_weights_section
from pfedhn.schedule import Schedule
from pfedhn.train import Batch, Normalization, evaluate_splits

WEIGHTS = "fomo.weights"  # the reported array: w_n of each candidate, in the order sent
CANDIDATE = "candidate{}/"  # prefix of the k-th candidate's tensors among the extras
DISTANCES = ("l1", "l2")
RNG_STREAM = 7  # tag of the exploration RNG's seed


def fomo_weights(base_loss: float, losses: list[float], distances: list[float]) -> np.ndarray:
    """w_n = (L(B) − L(θ_n)) / ‖θ_n − B‖; 0 for a candidate equal to the baseline (distance 0)."""
    return np.array([(base_loss - loss) / d if d > 0 else 0.0 for loss, d in zip(losses, distances)])


def mix(baseline: dict[str, torch.Tensor], candidates: list[dict[str, torch.Tensor]], weights: np.ndarray):
    """B + Σ_n ŵ_n (θ_n − B), ŵ the weights clipped at 0 and normalized; B if none is positive."""
    positive = np.clip(weights, 0.0, None)
    if positive.sum() <= 0:
        return dict(baseline)
    share = positive / positive.sum()
    return {
        name: base + sum(float(s) * (c[name] - base) for s, c in zip(share, candidates) if s > 0)
        for name, base in baseline.items()
    }


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], norm: str) -> float:
    """‖a − b‖ over all tensors flattened: L1 (the official default) or L2."""
    diffs = torch.cat([(a[n] - b[n]).flatten().double() for n in a])
    return float(diffs.abs().sum() if norm == "l1" else diffs.norm())


@torch.no_grad()
def prepare(
    cfg: DictConfig, model: nn.Module, extras: dict[str, np.ndarray], val: Batch, norm: Normalization
) -> dict[str, np.ndarray]:
    """The client's step before training: weigh the candidates on its validation data and
    load B + Σ ŵ_n (θ_n − B) into ``model`` (which holds B); report the raw weights."""
    baseline = {n: p.detach().clone() for n, p in model.named_parameters()}
    candidates = []
    for k in range(len(extras) // max(1, len(baseline))):
        prefix = CANDIDATE.format(k)
        candidates.append({n: torch.from_numpy(extras[prefix + n]).to(baseline[n].device) for n in baseline})

    def val_loss(weights: dict[str, torch.Tensor]) -> float:
        load(model, weights)
        result = evaluate_splits(model, {"val": val}, norm, cfg.client.eval_batch_size)["val"]
        return result.loss_sum / result.count

    base_loss = val_loss(baseline)
    losses = [val_loss(c) for c in candidates]
    distances = [distance(c, baseline, cfg.method.distance) for c in candidates]
    weights = fomo_weights(base_loss, losses, distances)
    load(model, mix(baseline, candidates, weights))
    return {WEIGHTS: weights.astype(np.float32)}


@torch.no_grad()
def load(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy ``weights`` (name → tensor) into ``model``'s parameters."""
    for name, param in model.named_parameters():
        param.copy_(weights[name])


class FedFomo(Method):
    """The server side: stored trained models and baselines, the affinity P, candidate picking.

    Parameters
    ----------
    trained, baselines : StoredModels
        θ_j, every client's latest trained model, and B_j, its model before that training.
    candidates : int
        Others' models each client weighs (besides its own).
    epsilon, epsilon_decay : float
        ε-greedy picking: with probability ε_t = max(ε − (t − 1)·decay, 0) in round t a slot
        takes a random participant, else the next by affinity.
    seed : int
        Seeds the exploration.
    """

    def __init__(
        self,
        trained: StoredModels,
        baselines: StoredModels,
        candidates: int,
        epsilon: float,
        epsilon_decay: float,
        seed: int,
    ) -> None:
        self.trained, self.baselines = trained, baselines
        self.candidates, self.epsilon, self.epsilon_decay = candidates, epsilon, epsilon_decay
        n = len(trained)
        self.affinity = torch.eye(n, dtype=torch.float64) * 0.1  # official: 0.1 on itself, 0 elsewhere
        self.participants: list[int] = []  # last round's: the candidate pool
        self.rng = np.random.default_rng([seed, RNG_STREAM])
        self._sent: dict[int, list[int]] = {}  # client → its candidates this round

    def __repr__(self) -> str:
        return f"FedFomo(candidates={self.candidates}, epsilon={self.epsilon}, decay={self.epsilon_decay})"

    def pick(self, client: int, server_round: int) -> list[int]:
        """Up to ``candidates`` of the last round's other participants, ε-greedy by affinity."""
        pool = [c for c in self.participants if c != client]
        ranked = sorted(self.rng.permutation(pool).tolist(), key=lambda c: -float(self.affinity[client, c]))
        shuffled = self.rng.permutation(pool).tolist()
        eps = max(self.epsilon - (server_round - 1) * self.epsilon_decay, 0.0)
        chosen: list[int] = []
        while len(chosen) < min(self.candidates, len(pool)):
            source = shuffled if self.rng.random() < eps else ranked
            chosen.append(next(c for c in source if c not in chosen))
        return chosen

    @torch.no_grad()
    def client_model(self, client: int, server_round: int, training: bool) -> ClientModel:
        """Training: B_client, and as extras its own θ and the picked others' θ; evaluation: θ_client."""
        if not training:
            return ClientModel(arrays(self.trained.of(client)))
        chosen = [client, *self.pick(client, server_round)]
        self._sent[client] = chosen
        extras = {
            CANDIDATE.format(k) + n: t for k, c in enumerate(chosen) for n, t in arrays(self.trained.of(c)).items()
        }
        return ClientModel(arrays(self.baselines.of(client)), extras=extras, reports={WEIGHTS: (len(chosen),)})

    def apply_updates(
        self,
        server_round: int,
        updates: dict[int, dict[str, np.ndarray]],
        num_examples: dict[int, int] | None = None,
    ) -> dict[str, Scalar]:
        """θ_i ← B_i + Δ_i, B_i ← its mix (the model it trained from), P_i += w / |Σ w|, after
        every client of the round (order-free); the round's clients become the next pool."""
        new = {}
        for client, returned in updates.items():
            weights = returned[WEIGHTS].astype(np.float64)
            chosen = self._sent.pop(client)
            base = self.baselines.of(client)
            mixed = mix(base, [self.trained.of(c) for c in chosen], weights)
            trained = {n: base[n] + torch.from_numpy(d).to(base[n].device) for n, d in returned.items() if n != WEIGHTS}
            new[client] = (trained, mixed)
            total = max(abs(weights.sum()), 1e-9)
            self.affinity[client, chosen] += torch.from_numpy(weights / total)
        for client, (trained, mixed) in new.items():
            self.trained.set(client, trained)
            self.baselines.set(client, mixed)
        self.participants = sorted(updates)
        return {}

    def clients_failed(self, clients: list[int]) -> None:
        for client in clients:
            self._sent.pop(client, None)

    def report(self) -> dict[str, Any]:
        """``affinity``: P as a (client, client) nested list."""
        return {"affinity": self.affinity.tolist()}

    def server_state(self) -> dict[str, Any]:
        return {
            "trained": self.trained.state(),
            "baselines": self.baselines.state(),
            "affinity": self.affinity,
            "participants": list(self.participants),
            "rng": self.rng.bit_generator.state,
        }

    def load_server_state(self, state: dict[str, Any]) -> None:
        self.trained.load_state(state["trained"])
        self.baselines.load_state(state["baselines"])
        self.affinity = state["affinity"].clone()
        self.participants = list(state["participants"])
        self.rng.bit_generator.state = state["rng"]


def build(cfg: DictConfig, schedule: Schedule) -> FedFomo:
    initial = {name: t.to(config.device(cfg)) for name, t in initial_weights(cfg).items()}
    m = cfg.method
    models = [StoredModels(initial, cfg.num_clients) for _ in range(2)]
    return FedFomo(*models, m.candidates, m.epsilon, m.epsilon_decay, cfg.seed)


AFFINITY = pair_weights_section(
    "affinity",
    "P",
    "affinity P (each weighing's w / |Σ w|, summed)",
    "FedFomo's affinity P at the end of the run, which ranks the candidates a client is sent (row i: 0.1 "
    "on itself at the start, plus w_n / |Σ w| each time client i weighed client j's model, negative when "
    "that model raised i's validation loss), against the classes clients share:",
)

SPEC = MethodSpec(
    build=build,
    checks=lambda cfg: {
        "method.candidates": (positive_int, "a positive integer (others' models each client weighs)"),
        "method.epsilon": (non_negative, "a non-negative number (ε of the ε-greedy picking)"),
        "method.epsilon_decay": (non_negative, "a non-negative number (ε's decrease per round)"),
        "method.distance": (lambda v: v in DISTANCES, f"one of {', '.join(DISTANCES)}"),
    },
    rows=TableRows(by_name, {"fedfomo": "FedFomo"}, sections=(AFFINITY,)),
    client_side=lambda cfg: ClientSide(prepare=prepare),
)
