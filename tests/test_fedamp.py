"""FedAMP: the attention-inducing weights, message passing, the proximal objective, its limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from pfedhn.aggregation import StoredModels
from pfedhn.config import compose
from pfedhn.main import run
from pfedhn.methods.fedamp import ProximalObjective, attention, message_passing
from tests.conftest import tiny_overrides

TOY = [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]  # squared distances d12 = 1, d13 = 4, d23 = 5


def toy_models() -> StoredModels:
    models = StoredModels({"w": torch.zeros(2)}, 3)
    for client, w in enumerate(TOY):
        models.set(client, {"w": torch.tensor(w)})
    return models


def direct_attention(w: list[list[float]], i: int, alpha: float, sigma: float) -> list[float]:
    """ξ_i written out: α e^{-d/σ}/σ for j ≠ i, and 1 − their sum for i."""
    import math

    xi = [alpha * math.exp(-sum((a - b) ** 2 for a, b in zip(w[i], w[j])) / sigma) / sigma for j in range(len(w))]
    xi[i] = 1 - sum(x for j, x in enumerate(xi) if j != i)
    return xi


@pytest.mark.parametrize("client", [0, 1, 2])
def test_attention_and_message_passing_on_the_toy_case(client: int) -> None:
    models = toy_models()
    xi = attention(models, client, alpha=0.5, sigma=1.0)
    expected = direct_attention(TOY, client, 0.5, 1.0)
    torch.testing.assert_close(xi, torch.tensor(expected, dtype=torch.float64))
    u = message_passing(models, client, xi)["w"]
    direct = sum(x * torch.tensor(w) for x, w in zip(expected, TOY))
    torch.testing.assert_close(u, direct.float())
    if client == 0:  # docs/rivals-research.md 1e, worked by hand
        torch.testing.assert_close(
            xi, torch.tensor([0.806902, 0.183940, 0.009158], dtype=torch.float64), atol=1e-6, rtol=0
        )
        torch.testing.assert_close(u, torch.tensor([0.183940, 0.018316]), atol=1e-6, rtol=0)


def test_equal_models_pass_themselves_even_with_a_tiny_sigma() -> None:
    """ξ_ij = α/σ = 1e12 on equal models: u is still exactly the model (no cancellation)."""
    models = StoredModels({"w": torch.tensor([0.1, -3.0])}, 4)
    xi = attention(models, 2, alpha=1.0, sigma=1e-12)
    assert xi[0] == 1e12
    assert torch.equal(message_passing(models, 2, xi)["w"], torch.tensor([0.1, -3.0]))


def test_the_proximal_term_is_differentiated() -> None:
    """At w = u + δ the term's gradient is (λ/α) δ (squared norm, not detached)."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    objective = ProximalObjective(model, weight=4.0)
    delta = {n: 0.1 * torch.randn_like(p) for n, p in model.named_parameters()}
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.add_(delta[n])
    batch = (torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1]))
    plain = nn.Linear(3, 2)
    plain.load_state_dict(model.state_dict())
    nn.functional.cross_entropy(plain(batch[0]), batch[1]).backward()
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)
    objective.step(model, [batch], [frozen], list(model.parameters()), grad_clip=1e9)
    for (n, p), q in zip(model.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad + 4.0 * delta[n])


def test_a_tiny_sigma_and_lamda_is_local_training(data_root: Path, tmp_path: Path) -> None:
    """Far apart (any trained pair), e^{-d/σ} is 0: every client trains from its own model, as Local."""
    common = tiny_overrides(data_root) + ["num_rounds=4", "eval_every=2", "clients_per_round=2"]
    fedamp = run(compose(common + ["method=fedamp", "method.sigma=1e-30", "method.lamda=1e-30"]), tmp_path / "a")
    local = run(compose(common + ["method=local"]), tmp_path / "b")
    for a, b in zip(fedamp.evaluations, local.evaluations, strict=True):
        assert a.round == b.round and a.test.client_accuracy == b.test.client_accuracy
        assert a.test.loss == pytest.approx(b.test.loss, rel=1e-5)
    report = json.loads((tmp_path / "a" / "results.json").read_text())["method_report"]["attention"]
    assert len(report) == 4 and all(len(row) == 4 for row in report)
