"""Curvature of Per-FedAvg global models against the adaptation step α (docs/reference-methods.md).

python docs/scripts/perfedavg_curvature.py RUN_DIR [RUN_DIR ...]

For the global model in each run's checkpoint and each client: the largest Hessian
eigenvalue λ_max of the client's training loss (power iteration with exact autograd
Hessian–vector products on 500 of its training samples), α·λ_max, and the size of HF's
correction relative to the gradient, |α H g| / |g| with g the gradient after the
adaptation step (on 500 other samples). One adaptation step w − α∇f is stable along a
direction only while α·λ < 2, and (I − αH) reverses the gradient along directions with
α·λ > 1.
"""

import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.func import functional_call

from pfedhn import config
from pfedhn.checkpoint import Checkpoint
from pfedhn.dataset import load_federated, normalize
from pfedhn.model import TargetCNN

Weights = dict[str, torch.Tensor]
POWER_ITERATIONS = 30
SAMPLES = 500


def gradient(model: TargetCNN, weights: Weights, x: torch.Tensor, y: torch.Tensor, graph: bool = False) -> Weights:
    leaves = {k: w.detach().requires_grad_() for k, w in weights.items()} if not graph else weights
    loss = F.cross_entropy(functional_call(model, leaves, (x,)), y)
    return dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()), create_graph=graph)))


def hessian_vector(model: TargetCNN, weights: Weights, v: Weights, x: torch.Tensor, y: torch.Tensor) -> Weights:
    leaves = {k: w.detach().requires_grad_() for k, w in weights.items()}
    g = gradient(model, leaves, x, y, graph=True)
    dot = sum((g[k] * v[k]).sum() for k in leaves)
    return dict(zip(leaves, torch.autograd.grad(dot, list(leaves.values()))))


def norm(v: Weights) -> float:
    return float(torch.sqrt(sum((t**2).sum() for t in v.values())))


def client_curvature(
    model: TargetCNN, weights: Weights, alpha: float, x: torch.Tensor, y: torch.Tensor
) -> tuple[float, float]:
    """(λ_max, |α H g| / |g|) of one client; x, y hold 2 × SAMPLES training samples."""
    (xa, xb), (ya, yb) = x.split(SAMPLES), y.split(SAMPLES)
    v = {k: torch.randn_like(w) for k, w in weights.items()}
    lam = 0.0
    for _ in range(POWER_ITERATIONS):
        length = norm(v)
        v = {k: t / length for k, t in v.items()}
        hv = hessian_vector(model, weights, v, xa, ya)
        lam = float(sum((hv[k] * v[k]).sum() for k in v))
        v = hv
    adapted = {k: w - alpha * g for (k, w), g in zip(weights.items(), gradient(model, weights, xa, ya).values())}
    g = gradient(model, adapted, xb, yb)
    return lam, alpha * norm(hessian_vector(model, weights, g, xa, ya)) / norm(g)


def main(run_dirs: list[Path]) -> None:
    torch.manual_seed(0)
    for run_dir in run_dirs:
        checkpoint = Checkpoint.load(run_dir / "checkpoint.pt")
        cfg = OmegaConf.create(checkpoint.config)
        data = load_federated(config.data_settings(cfg), cfg.dataset.num_classes)
        mean, std = config.normalization(cfg).mean, config.normalization(cfg).std
        model = TargetCNN(config.model_spec(cfg))
        weights = {k: torch.as_tensor(w).float() for k, w in checkpoint.server["weights"].items()}
        alpha = float(cfg.method.alpha)
        lams, ratios = [], []
        for client in range(cfg.num_clients):
            images, labels = data.client_split(client, "train")
            pick = torch.randperm(len(labels))[: 2 * SAMPLES]
            lam, ratio = client_curvature(model, weights, alpha, normalize(images[pick], mean, std), labels[pick])
            lams.append(lam)
            ratios.append(ratio)
        print(
            f"{run_dir.name} (round {checkpoint.round}, variant {cfg.method.variant}, alpha {alpha}): "
            f"lambda_max median {statistics.median(lams):.1f} [{min(lams):.1f}, {max(lams):.1f}], "
            f"alpha*lambda_max median {alpha * statistics.median(lams):.2f}, "
            f"|alpha H g|/|g| median {statistics.median(ratios):.2f}"
        )


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]])
