"""What pFedLA's server costs as the federation grows: peak memory and one round's server time.

    python docs/scripts/pfedla_server_cost.py [--clients 10 50 100] [--rounds 3] [--threads 1]

The server keeps N client models (``StoredModels``) and N hypernetworks whose heads are
layers × hidden × N parameters; a round of all N clients builds N aggregated models
(``client_model``) and takes N hypernetwork steps (``apply_updates``). Each N runs in a fresh
process (CIFAR-10's target CNN, the pFedLA preset's sizes, random changes in place of trained
ones: the server's work does not depend on their values); printed: the server's parameters,
its peak resident memory, and the median over ``--rounds`` rounds of each part's seconds.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch


def measure(num_clients: int, rounds: int, threads: int) -> dict[str, float]:
    """One N in this process: the server built from the pFedLA preset, ``rounds`` rounds of all clients."""
    from pfedhn.config import compose
    from pfedhn.methods import build_strategy

    torch.set_num_threads(threads)
    cfg = compose(["method=pfedla", f"num_clients={num_clients}", f"clients_per_round={num_clients}"])
    method = build_strategy(cfg, progress=False).method
    rng = np.random.default_rng(0)
    send, update = [], []
    for server_round in range(1, rounds + 1):
        start = time.perf_counter()
        models = {c: method.client_model(c, server_round, training=True) for c in range(num_clients)}
        sent = time.perf_counter()
        deltas = {
            c: {n: (1e-3 * rng.standard_normal(a.shape)).astype(np.float32) for n, a in m.arrays.items()}
            for c, m in models.items()
        }
        begin = time.perf_counter()
        method.apply_updates(server_round, deltas)
        update.append(time.perf_counter() - begin)
        send.append(sent - start)
    hn = sum(p.numel() for p in method.weights.parameters())
    stored = sum(t.numel() for t in method.models.tensors.values())
    return {
        "clients": num_clients,
        "hypernetwork_params": hn,
        "stored_params": stored,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "client_models_s": statistics.median(send),
        "apply_updates_s": statistics.median(update),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one N here
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.rounds, args.threads)))
        return
    print(
        "| clients | hypernetwork parameters | stored model parameters | peak memory (MB) "
        "| a round's models (s) | a round's steps (s) |"
    )
    print("|---|---|---|---|---|---|")
    for n in args.clients:
        command = [sys.executable, __file__, "--one", str(n), "--rounds", str(args.rounds)]
        command += ["--threads", str(args.threads)]
        row = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        print(
            f"| {n} | {row['hypernetwork_params']:,} | {row['stored_params']:,} | {row['peak_rss_mb']:.0f} "
            f"| {row['client_models_s']:.2f} | {row['apply_updates_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
