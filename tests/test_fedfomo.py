"""FedFomo: the loss-improvement weights, the mix, candidate picking, the client's step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from pfedhn.aggregation import StoredModels
from pfedhn.methods.fedfomo import CANDIDATE, WEIGHTS, FedFomo, distance, fomo_weights, load, mix, prepare
from pfedhn.train import Normalization, evaluate_splits

BASE = {"w": torch.tensor([0.0, 0.0])}
CANDIDATES = [{"w": torch.tensor([3.0, 4.0])}, {"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([0.0, 2.0])}]
LOSSES = [0.5, 0.9, 1.2]  # the baseline's: 1.0


@pytest.mark.parametrize(
    ("norm", "raw", "mixed"),
    [  # docs/rivals-research.md 2f, worked by hand
        ("l1", [0.5 / 7, 0.1, -0.1], [1.833333, 1.666667]),
        ("l2", [0.1, 0.1, -0.1], [2.0, 2.0]),
    ],
)
def test_weights_and_mix_on_the_toy_case(norm: str, raw: list[float], mixed: list[float]) -> None:
    distances = [distance(c, BASE, norm) for c in CANDIDATES]
    weights = fomo_weights(1.0, LOSSES, distances)
    np.testing.assert_allclose(weights, raw, rtol=1e-12)
    torch.testing.assert_close(mix(BASE, CANDIDATES, weights)["w"], torch.tensor(mixed))


def test_no_improving_candidate_reverts_to_the_baseline_and_equal_ones_weigh_zero() -> None:
    weights = fomo_weights(1.0, [1.1, 1.2, 1.3], [distance(c, BASE, "l1") for c in CANDIDATES])
    assert (weights < 0).all() and torch.equal(mix(BASE, CANDIDATES, weights)["w"], BASE["w"])
    assert fomo_weights(1.0, [0.2], [0.0]).tolist() == [0.0]


def test_the_client_keeps_its_own_training_when_no_neighbour_improves() -> None:
    """Its own trained model the only improving candidate: the client goes on from it, as Local."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    val = (torch.randint(0, 255, (16, 1, 2, 2), dtype=torch.uint8), torch.randint(0, 2, (16,)))
    norm = Normalization(torch.full((1, 1, 1, 1), 0.5), torch.full((1, 1, 1, 1), 0.25))
    cfg = OmegaConf.create({"client": {"eval_batch_size": 8}, "method": {"distance": "l1"}})
    baseline = {n: p.detach().clone() for n, p in model.named_parameters()}

    def loss(weights: dict[str, torch.Tensor]) -> float:
        load(model, weights)
        result = evaluate_splits(model, {"val": val}, norm, 8)["val"]
        return result.loss_sum / result.count

    step = {n: 0.05 * torch.randn_like(t) for n, t in baseline.items()}
    trained = {n: t + step[n] for n, t in baseline.items()}
    if loss(trained) >= loss(baseline):  # make the own candidate the improving one
        trained = {n: t - step[n] for n, t in baseline.items()}
    worse = {n: t + 5.0 * torch.randn_like(t) for n, t in baseline.items()}
    assert loss(trained) < loss(baseline) < loss(worse)
    load(model, baseline)
    extras = {CANDIDATE.format(k) + n: c[n].numpy() for k, c in enumerate([trained, worse]) for n in c}
    reported = prepare(cfg, model, extras, val, norm)
    assert reported[WEIGHTS][0] > 0 > reported[WEIGHTS][1]
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), trained[n])


def make(n: int = 6, candidates: int = 2, epsilon: float = 0.0) -> FedFomo:
    models = [StoredModels({"w": torch.zeros(2)}, n) for _ in range(2)]
    return FedFomo(*models, candidates=candidates, epsilon=epsilon, epsilon_decay=0.05, seed=0)


def test_greedy_picking_takes_the_highest_affinity_among_the_last_participants() -> None:
    fomo = make()
    fomo.participants = [0, 1, 2, 4]
    fomo.affinity[3] = torch.tensor([0.9, 0.1, 0.5, 0.1, 0.0, 2.0], dtype=torch.float64)
    assert fomo.pick(3, server_round=10) == [0, 2]  # 5 has the most but did not take part
    assert fomo.pick(0, server_round=10)[:1] != [0]  # never itself
    fomo.participants = [1, 3]
    assert sorted(fomo.pick(3, server_round=10)) == [1]  # fewer available than candidates


def test_exploration_decays_to_greedy() -> None:
    fomo = make(n=12, candidates=3, epsilon=0.3)
    fomo.participants = list(range(12))
    fomo.affinity[0, 1:4] = 1.0
    early = [tuple(fomo.pick(0, server_round=1)) for _ in range(200)]
    assert sum(set(e) != {1, 2, 3} for e in early) > 20  # ε = 0.3: some random slots
    assert all(set(fomo.pick(0, server_round=7)) == {1, 2, 3} for _ in range(50))  # ε_7 = 0


def test_the_server_recomputes_the_client_s_mix_and_adds_its_affinity() -> None:
    fomo = make(n=3, candidates=2)
    for client, w in enumerate([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]]):
        fomo.trained.set(client, {"w": torch.tensor(w)})
    fomo.participants = [1, 2]
    fomo.affinity[0] = torch.tensor([0.1, 2.0, 1.0], dtype=torch.float64)
    sent = fomo.client_model(0, server_round=10, training=True)
    assert [k for k in sent.extras] == ["candidate0/w", "candidate1/w", "candidate2/w"]
    assert [a.tolist() for a in sent.extras.values()] == [[0, 0], [3, 4], [1, 0]]  # itself, then by affinity
    assert sent.reports == {WEIGHTS: (3,)} and sent.arrays["w"].tolist() == [0, 0]  # its baseline
    weights = np.array([0.0, 0.1, 0.3], dtype=np.float32)
    fomo.apply_updates(10, {0: {"w": np.array([1.0, 1.0], dtype=np.float32), WEIGHTS: weights}})
    torch.testing.assert_close(fomo.baselines.of(0)["w"], torch.tensor([1.5, 1.0]))  # 0.25 θ_1 + 0.75 θ_2
    torch.testing.assert_close(fomo.trained.of(0)["w"], torch.tensor([1.0, 1.0]))  # baseline + Δ
    torch.testing.assert_close(fomo.affinity[0], torch.tensor([0.1, 2.25, 1.75], dtype=torch.float64))
    assert fomo.participants == [0]
