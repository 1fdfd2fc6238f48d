"""How hard pFedLA's update pushes α, per layer, in a few rounds of a real run.

    python docs/scripts/pfedla_alpha_gradient.py --root <data root> --rounds 4 \\
        --overrides +experiment=pfedla_cifar10 method=pfedla method.server.lr=5e-3

Runs the first ``--rounds`` rounds of the configured pFedLA run in this process (the
package's strategy and clients, no Flower: the same arithmetic), every client every round.
Before each round's hypernetwork steps it takes, for each client i and layer l, the
gradient g_i^l = ∂½‖θ̄_i(α) − θ_trained,i‖²/∂α_i^l (one entry per client j: −⟨Δ_i^l, θ_j^l⟩)
and its spread over j, g − mean_j g: only the spread can change the normalized weights
(a push shared by every j is undone by the normalization). It then copies each client's
hypernetwork, steps the copy once with plain SGD (no momentum) at each ``--rates`` from the
same Δ, and records how far α_ii^l (the self-weight) moves, and in which direction. The real run
continues at the config's rate.
HeurpFedLA (``method.local_layers`` > 0): a client's kept and released layers are left out of both, as
its hypernetwork update leaves them out (their gradient is 0, their count in ``left_out``).
Prints one line per (round, layer) and writes all of it to ``--json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from pathlib import Path

import torch
from flwr.app import RecordDict

from pfedhn.client_app import PersonalizedClient
from pfedhn.config import compose
from pfedhn.methods import build_strategy


def alpha_gradient(method, client: int, deltas: dict[str, torch.Tensor], skip: list[str]) -> torch.Tensor:
    """∂½‖θ̄(α) − (θ̄ + Δ)‖²/∂α for ``client``'s α as it stands: (layers, clients); 0 on the
    layers in ``skip``, which are neither aggregated nor in ``deltas``."""
    alpha = method.alpha(client).detach().requires_grad_(True)
    aggregated = method.aggregate(alpha, skip=skip)
    loss = sum(0.5 * (aggregated[n] - (aggregated[n].detach() + deltas[n])).pow(2).sum() for n in deltas)
    (grad,) = torch.autograd.grad(loss, alpha)
    return grad


def self_weight_moves(
    method, client: int, deltas: dict[str, torch.Tensor], rates: list[float], skip: list[str], before: torch.Tensor
) -> dict[float, list]:
    """Rate → per layer, α_ii^l after one ``PFedLA.hypernetwork_step`` of a copy of HN_client
    (its layers in ``skip`` left out), with plain SGD at that rate, minus ``before`` (its α_ii^l as
    it stands; the stored models and the method are untouched)."""
    moves = {}
    for rate in rates:
        trial = copy.copy(method)  # shares the stored models, which a hypernetwork step only reads
        trial.weights = copy.deepcopy(method.weights)
        trial.optimizers = list(method.optimizers)
        trial.optimizers[client] = torch.optim.SGD(trial.weights[client].parameters(), lr=rate)  # the push of Δ alone
        trial.hypernetwork_step(client, deltas, skip=skip)
        moves[rate] = (trial.alpha(client).detach()[:, client] - before).tolist()
    return moves


def layer_push(
    index: int,
    layer: str,
    grads: list[torch.Tensor],
    moves: list[dict],
    skips: dict[int, list[str]],
    rates: list[float],
    levels: list[torch.Tensor],
) -> dict:
    """One layer's row: mean |g| and spread over the clients whose update included it (None if
    none did), how many left it out, the mean α_ii before the round's steps (``levels``: per client,
    its self-weight per layer), and per rate the mean |Δα_ii| and mean Δα_ii over every client (a
    layer left out still moves through the hypernetwork's shared trunk)."""
    included = [g[index] for g, skip in zip(grads, skips.values()) if layer not in skip]
    return {
        "self_weight": statistics.mean(float(level[index]) for level in levels),
        "left_out": len(grads) - len(included),
        "grad_mean_abs": statistics.mean(float(g.abs().mean()) for g in included) if included else None,
        "spread_max_abs": statistics.mean(float((g - g.mean()).abs().max()) for g in included) if included else None,
        "self_weight_move": {str(r): statistics.mean(abs(m[r][index]) for m in moves) for r in rates},
        "self_weight_step": {str(r): statistics.mean(m[r][index] for m in moves) for r in rates},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--rates", type=float, nargs="+", default=[5e-3, 5e-2, 0.25, 1.0])
    parser.add_argument("--overrides", nargs="*", default=["+experiment=pfedla_cifar10", "method=pfedla"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = compose([*args.overrides, f"dataset.root={args.root}", "simulation.threads=1"])
    strategy = build_strategy(cfg, progress=False)
    method = strategy.method
    sizes = {layer: sum(method.models.tensors[n][0].numel() for n in names) for layer, names in method.layers.items()}
    states = [RecordDict() for _ in range(cfg.num_clients)]
    rows = []
    for server_round in range(1, args.rounds + 1):
        updates, skips = {}, {}
        for client in range(cfg.num_clients):
            model = method.client_model(client, server_round, True)
            arrays, config = strategy.outbox.message(client, server_round, True, model)
            delta, _, _ = PersonalizedClient(client, cfg, states[client]).fit(arrays, config)
            updates[client] = dict(zip(model.returned, delta))
            apart = set(model.keep) | set(model.release)
            skips[client] = [layer for layer, names in method.layers.items() if apart & set(names)]
        grads, moves = [], []
        levels = [method.alpha(client).detach()[:, client] for client in range(cfg.num_clients)]
        for client, arrays in updates.items():
            skipped = {n for layer in skips[client] for n in method.layers[layer]}
            deltas = {n: torch.from_numpy(a).to(method.models.device) for n, a in arrays.items() if n not in skipped}
            grads.append(alpha_gradient(method, client, deltas, skips[client]))
            moves.append(self_weight_moves(method, client, deltas, args.rates, skips[client], levels[client]))
        for index, layer in enumerate(method.layers):
            row = {"round": server_round, "layer": layer, "parameters": sizes[layer]}
            row.update(layer_push(index, layer, grads, moves, skips, args.rates, levels))
            rows.append(row)
            size, step = row["self_weight_move"], row["self_weight_step"]
            moved = " ".join(f"{r:g}:{size[str(r)]:.2e} ({step[str(r)]:+.2e})" for r in args.rates)
            pushed = (
                "left out by every client"
                if row["grad_mean_abs"] is None
                else f"|g| {row['grad_mean_abs']:.3e} spread {row['spread_max_abs']:.3e}"
            )
            print(
                f"round {server_round} {layer:6s} params {sizes[layer]:7d} {pushed} "
                f"(left out by {row['left_out']}) α_ii {row['self_weight']:.3f} |Δα_ii| (Δα_ii) {moved}",
                flush=True,
            )
        method.apply_updates(server_round, updates)
    if args.json is not None:
        args.json.write_text(json.dumps({"overrides": args.overrides, "rates": args.rates, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
