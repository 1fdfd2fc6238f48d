"""FedAMP's σ against the distances it sees: squared distances between the clients' stored models
in a FedAMP checkpoint, and the weight ξ each other client gets at several σ.

    python -m pfedhn.main +experiment=pfedla_cifar10 method=fedamp '~method.server' num_rounds=2 \\
        eval_every=2 checkpoint_every=1 dataset.root=<data root> hydra.run.dir=<run dir>
    python docs/scripts/fedamp_distances.py <run dir>/checkpoint.pt --sigmas 1 10 100 1000

ξ_ij = α e^{−d_ij/σ} / σ with α = σ / 20 (the rule the MNIST σ choice used, so α / σ = 0.05
for every σ): σ far below the distances gives ξ ≈ 0 (FedAMP trains as Local), σ far above
gives every other client the same ξ (no attention).
"""

from __future__ import annotations

import argparse

import torch

from pfedhn.checkpoint import Checkpoint


def squared_distances(models: dict[str, torch.Tensor]) -> torch.Tensor:
    """(clients, clients) ‖w_i − w_j‖² over every stored tensor (each (clients, ...)), float64."""
    total = None
    for stacked in models.values():
        flat = stacked.double().flatten(1)
        part = torch.cdist(flat, flat) ** 2
        total = part if total is None else total + part
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[1.0, 10.0, 100.0, 1000.0])
    args = parser.parse_args()
    checkpoint = Checkpoint.load(args.checkpoint)
    distances = squared_distances(checkpoint.server["models"])
    others = distances[~torch.eye(len(distances), dtype=torch.bool)]
    print(
        f"squared distances between clients' models: min {others.min():.2f} median {others.median():.2f} "
        f"max {others.max():.2f}"
    )
    for sigma in args.sigmas:
        xi = (sigma / 20) * torch.exp(-others / sigma) / sigma
        print(f"sigma {sigma:g}: xi per other client min {xi.min():.2e} median {xi.median():.2e} max {xi.max():.2e}")


if __name__ == "__main__":
    main()
