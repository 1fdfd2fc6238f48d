"""FedAMP's σ against the distances it sees: squared distances between the clients' stored models
in a FedAMP checkpoint, and the weight ξ each other client gets at several σ.

    python -m pfedhn.main +experiment=pfedla_cifar10 method=fedamp num_rounds=2 \\
        eval_every=2 checkpoint_every=1 dataset.root=<data root> hydra.run.dir=<run dir>
    python docs/scripts/fedamp_distances.py <run dir>/checkpoint.pt --sigmas 1 10 100 1000

ξ_ij = α e^{−d_ij/σ} / σ (``pfedhn.methods.fedamp.attention``) with α = σ / 20 (the rule the
MNIST σ choice used, so α / σ = 0.05 for every σ): σ far below the distances gives ξ ≈ 0
(FedAMP trains as Local), σ far above gives every other client the same ξ (no attention).
"""

from __future__ import annotations

import argparse

import torch

from pfedhn.aggregation import StoredModels
from pfedhn.checkpoint import Checkpoint
from pfedhn.methods.fedamp import attention, squared_distances


def off_diagonal(rows: list[torch.Tensor]) -> torch.Tensor:
    """The entries j ≠ i of rows i = 0, 1, …, flattened."""
    return torch.cat([row[torch.arange(len(row)) != i] for i, row in enumerate(rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[1.0, 10.0, 100.0, 1000.0])
    args = parser.parse_args()
    stored = Checkpoint.load(args.checkpoint).server["models"]
    clients = len(next(iter(stored.values())))
    models = StoredModels({name: tensor[0] for name, tensor in stored.items()}, clients)
    models.load_state(stored)
    others = off_diagonal([squared_distances(models, c) for c in range(clients)])
    print(
        f"squared distances between clients' models: min {others.min():.2f} median {others.median():.2f} "
        f"max {others.max():.2f}"
    )
    for sigma in args.sigmas:
        xi = off_diagonal([attention(models, c, sigma / 20, sigma) for c in range(clients)])
        print(f"sigma {sigma:g}: xi per other client min {xi.min():.2e} median {xi.median():.2e} max {xi.max():.2e}")


if __name__ == "__main__":
    main()
