"""Paper Sec. 5.2: one hypernetwork serves clients whose target CNNs have different sizes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import RecordDict

from pfedhn import validation
from pfedhn.client_app import PersonalizedClient
from pfedhn.config import compose
from pfedhn.errors import ConfigError
from pfedhn.methods import build_strategy, target_of
from pfedhn.model import TargetCNN
from pfedhn.summarize import main as summarize
from tests.conftest import message, run_pfedhn, tiny_overrides

SIZES = [2, 3, 4]


def setup(data_root: Path, method: str = "pfedhn"):
    cfg = compose(
        tiny_overrides(data_root, num_clients=6) + [f"method={method}", f"method.sizes=[{','.join(map(str, SIZES))}]"]
    )
    return cfg, build_strategy(cfg, progress=False)


@pytest.mark.parametrize("method", ["pfedhn", "pfedhn_pc"])
def test_each_client_receives_exactly_the_tensors_of_its_size(data_root: Path, method: str) -> None:
    cfg, strategy = setup(data_root, method)
    for client in range(6):
        arrays, instruction = message(strategy, client, 1, training=True)
        n_kernels = SIZES[client % 3]
        target = TargetCNN(target_of(cfg, client))
        expected = {n: p.shape for n, p in target.named_parameters() if method == "pfedhn" or not n.startswith("head.")}
        sent = dict(zip(instruction["sent"].split(","), arrays))
        assert {n: a.shape for n, a in sent.items()} == expected
        assert target.conv1.out_channels == n_kernels
        strategy.outbox.reply(client, [np.zeros_like(a) for a in arrays])


def test_a_client_moves_its_own_size_only(data_root: Path) -> None:
    """A fit of a size-3 client steps the shared MLP and embedding and the size-3 heads; the
    other sizes' heads get a zero gradient, as the parts of one output vector a client does not
    use would (the authors' description), so only weight decay moves them."""
    cfg, strategy = setup(data_root)
    heads = dict(zip(strategy.method.hypernetwork.shapes, strategy.method.hypernetwork.heads))
    before = {n: h.weight.detach().clone() for n, h in heads.items()}
    arrays, instruction = message(strategy, 1, 1, training=True)
    deltas = strategy.outbox.reply(1, PersonalizedClient(1, cfg, RecordDict()).fit(arrays, instruction)[0])
    strategy.method.apply_updates(1, {1: deltas})
    server = cfg.method.server
    for name, head in heads.items():
        decayed = before[name] * (1 - server.lr * server.weight_decay)
        assert torch.allclose(head.weight, decayed, rtol=0, atol=1e-7) != name.startswith("k3/"), name


def test_sizes_are_refused_by_methods_with_one_size(data_root: Path) -> None:
    with pytest.raises(ConfigError, match="method.sizes: method fedavg does not read it"):
        validation.validate(
            compose(tiny_overrides(data_root, num_clients=6) + ["method=fedavg", "+method.sizes=[2,4]"])
        )


def test_a_multi_size_run_reports_each_size(data_root: Path, tmp_path: Path) -> None:
    tiny = [arg for arg in tiny_overrides(data_root, num_clients=6) if not arg.startswith("model.n_kernels=")]
    args = tiny + ["method.sizes=[2,4]", "num_rounds=4", "eval_every=3"]  # the sizes replace n_kernels
    done = run_pfedhn([*args, f"hydra.run.dir={tmp_path / 'run'}"])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "results.json").read_text())
    assert result["groups"]["k2"]["clients"] == [0, 2, 4] and result["groups"]["k4"]["clients"] == [1, 3, 5]
    text = summarize([str(tmp_path), "--table", str(tmp_path / "t.md"), "--static", str(tmp_path / "s")])
    assert "| pFedHN, n_kernels 2 / 4 | MNIST, 6 | 4 | 2 | 3 |" in text


@pytest.mark.parametrize("method", ["pfedhn", "pfedhn_pc"])
@pytest.mark.parametrize("sizes", [[], SIZES])
def test_an_evaluation_generates_each_clients_model_as_one_at_a_time_would(
    data_root: Path, method: str, sizes: list[int]
) -> None:
    """``client_models`` batches the hypernetwork's pass for an evaluation: the same tensors
    (up to float rounding) under the same names as ``client_model`` gives each client."""
    extra = [f"method.sizes=[{','.join(map(str, sizes))}]"] if sizes else []
    cfg = compose(tiny_overrides(data_root, num_clients=6) + [f"method={method}", *extra])
    strategy = build_strategy(cfg, progress=False)
    batched = strategy.method.client_models(list(range(6)), 3, training=False)
    for client in range(6):
        alone = strategy.method.client_model(client, 3, training=False)
        assert list(batched[client].arrays) == list(alone.arrays) and batched[client].keep == alone.keep
        for name, array in alone.arrays.items():
            np.testing.assert_allclose(batched[client].arrays[name], array, rtol=1e-5, atol=1e-6)
