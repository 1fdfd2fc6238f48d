"""pFedLA and HeurpFedLA: each test rules out one way the public re-implementations go wrong."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import RecordDict
from flwr.common import ndarrays_to_parameters

from pfedhn import validation
from pfedhn.client_app import PersonalizedClient
from pfedhn.config import compose
from pfedhn.methods import build_strategy
from pfedhn.methods.pfedla import PFedLA
from pfedhn.protocol import split_names
from tests.conftest import instruction, message, tiny_overrides

NUM_CLIENTS = 4


def setup(data_root: Path, *extra: str) -> tuple[object, PFedLA]:
    cfg = compose(tiny_overrides(data_root, num_clients=NUM_CLIENTS) + ["method=pfedla", *extra])
    return cfg, build_strategy(cfg, progress=False)


def fit(cfg, strategy: PFedLA, client: int, server_round: int, state: RecordDict | None = None) -> dict:
    """One training round of ``client`` through the real client; the named deltas it returns."""
    arrays, config = message(strategy, client, server_round, training=True)
    delta = PersonalizedClient(client, cfg, RecordDict() if state is None else state).fit(arrays, config)[0]
    return strategy.outbox.reply(client, delta)


def force_alpha(strategy: PFedLA, client: int, scores: torch.Tensor) -> None:
    """Make HN_client's heads output ``scores`` (num_clients,) for every layer, whatever its
    features: zero weights, ``scores`` as bias. Its gradient is then zero (α stays)."""
    with torch.no_grad():
        for head in strategy.method.weights[client].heads:
            head.weight.zero_()
            head.bias.copy_(scores)


def test_alpha_one_hot_on_the_client_itself_is_local_training(data_root: Path) -> None:
    """Trap 2 (the aggregate overwritten by the client's own model) would pass this too, so the
    next tests check that other weights do mix models."""
    cfg, strategy = setup(data_root)
    for client in range(NUM_CLIENTS):
        force_alpha(strategy, client, torch.nn.functional.one_hot(torch.tensor(client), NUM_CLIENTS).float())
    local = {name: t.clone() for name, t in strategy.method.models.of(1).items()}  # the shared initialization
    strategy.method.models.set(0, {name: t + 1 for name, t in local.items()})  # another client, far away
    for server_round in (1, 2, 3):
        arrays, config = message(strategy, 1, server_round, training=True)
        sent = dict(zip(config["sent"].split(","), arrays))
        assert all(np.array_equal(sent[n], local[n].numpy()) for n in local)
        deltas = strategy.outbox.reply(1, PersonalizedClient(1, cfg, RecordDict()).fit(arrays, config)[0])
        strategy.method.apply_updates(server_round, {1: deltas})
        local = {name: local[name] + torch.from_numpy(deltas[name]) for name in local}  # training alone
    assert all(torch.equal(strategy.method.models.of(1)[n], local[n]) for n in local)


def test_alpha_uniform_sends_the_plain_average(data_root: Path) -> None:
    cfg, strategy = setup(data_root)
    for client in range(NUM_CLIENTS):  # make the stored models differ
        strategy.method.apply_updates(1, {client: fit(cfg, strategy, client, 1)})
    force_alpha(strategy, 2, torch.ones(NUM_CLIENTS))
    sent = strategy.method.client_model(2, 2, training=False).arrays
    for name, stacked in strategy.method.models.tensors.items():
        assert not torch.allclose(stacked[0], stacked[1])
        np.testing.assert_allclose(sent[name], stacked.mean(0).numpy(), rtol=1e-5, atol=1e-7)


def test_one_small_hypernetwork_step_brings_the_aggregate_toward_the_trained_model(data_root: Path) -> None:
    """Trap 1: both public versions step with the sign reversed."""
    cfg, strategy = setup(data_root, "method.server.lr=1e-4")
    for client in range(NUM_CLIENTS):
        strategy.method.apply_updates(1, {client: fit(cfg, strategy, client, 1)})
    deltas = fit(cfg, strategy, 0, 2)
    before = strategy.method.client_model(0, 2, training=False).arrays
    trained = {name: before[name] + deltas[name] for name in deltas}
    strategy.method.hypernetwork_step(0, {n: torch.from_numpy(d) for n, d in deltas.items()}, skip=[])
    after = strategy.method.client_model(0, 2, training=False).arrays  # same stored models, stepped HN_0

    def distance(aggregate: dict) -> float:
        return sum(float(np.sum((aggregate[n] - trained[n]) ** 2)) for n in trained)

    assert distance(after) < distance(before)


def test_the_order_of_the_clients_in_a_round_does_not_matter(data_root: Path) -> None:
    """Trap 3: later clients of a round must not aggregate models updated earlier in it."""
    cfg, strategy = setup(data_root)
    for client in range(NUM_CLIENTS):
        strategy.method.apply_updates(1, {client: fit(cfg, strategy, client, 1)})
    checkpoint = copy.deepcopy(strategy.method.server_state())
    deltas = {client: fit(cfg, strategy, client, 2) for client in (3, 0, 2)}

    def state_after(order: list[int]) -> dict:
        strategy.method.load_server_state(checkpoint)
        for client in order:
            message(strategy, client, 2, training=True)
        strategy.method.apply_updates(2, {client: deltas[client] for client in order})
        return copy.deepcopy(strategy.method.server_state())  # its tensors alias the live parameters

    forward, backward = state_after([3, 0, 2]), state_after([2, 0, 3])
    for part in ("weights", "models"):
        for name, tensor in forward[part].items():
            assert torch.equal(tensor, backward[part][name]), name
    for client in deltas:  # HN_client stepped, and θ_client stored, as if it were alone in the round
        alone = state_after([client])
        for name, tensor in forward["weights"].items():
            if name.startswith(f"{client}."):
                assert torch.equal(tensor, alone["weights"][name]), name
        for name, stacked in forward["models"].items():
            assert torch.equal(stacked[client], alone["models"][name][client]), name


def test_an_evaluation_leaves_every_server_tensor_unchanged(data_root: Path) -> None:
    """Trap 3's second half: their test pass overwrote stored models."""
    cfg, strategy = setup(data_root, "method=heurpfedla")
    states = [RecordDict() for _ in range(NUM_CLIENTS)]
    strategy.method.apply_updates(1, {0: fit(cfg, strategy, 0, 1, states[0])})
    before = copy.deepcopy(strategy.method.server_state())
    for client in range(NUM_CLIENTS):
        arrays, config = message(strategy, client, 2, training=False)
        PersonalizedClient(client, cfg, states[client]).evaluate(arrays, config)
    after = strategy.method.server_state()
    for part in ("models", "weights"):
        assert all(torch.equal(before[part][n], after[part][n]) for n in before[part])
    assert before["holds"] == after["holds"] and not strategy.outbox.awaited


@pytest.mark.parametrize("k", [1, 2, 3])
def test_heurpfedla_keeps_exactly_k_layers_local_and_sends_their_bytes_no_more(data_root: Path, k: int) -> None:
    """Trap 4: neither public version skips sending the local layers."""
    cfg, heur = setup(data_root, "method=heurpfedla", f"method.local_layers={k}")
    _, plain = setup(data_root)
    state = RecordDict()
    heur.method.apply_updates(1, {1: fit(cfg, heur, 1, 1, state)})
    model = heur.method.client_model(1, 2, training=True)
    local = [layer for layer, names in heur.method.layers.items() if set(names) <= set(model.keep)]
    assert len(local) == k and len(model.keep) == sum(len(heur.method.layers[layer]) for layer in local)
    self_weights = heur.method.alpha(1).detach()[:, 1].tolist()
    chosen = [self_weights[list(heur.method.layers).index(layer)] for layer in local]
    assert min(chosen) >= max(w for i, w in enumerate(self_weights) if list(heur.method.layers)[i] not in local)
    assert not set(model.keep) & set(model.arrays)  # held by the client: not sent
    assert model.returned == list(model.arrays)  # and not uploaded
    kept = plain.method.client_model(1, 2, training=False).arrays
    kept_bytes = sum(len(t) for t in ndarrays_to_parameters([kept[n] for n in model.keep]).tensors)
    heur.history.bytes_sent = plain.history.bytes_sent = 0
    instruction(heur, 1, 2, training=True)
    instruction(plain, 1, 2, training=True)
    assert plain.history.bytes_sent - heur.history.bytes_sent == kept_bytes
    # the next fit trains the client's own copy of the local layers and returns the rest
    deltas = heur.outbox.reply(1, PersonalizedClient(1, cfg, state).fit(*message(heur, 1, 2, training=True))[0])
    assert list(deltas) == model.returned
    assert set(state["kept"].to_torch_state_dict()) == set(model.keep)


def test_an_all_zero_row_of_scores_means_the_clients_own_layer() -> None:
    from pfedhn.hypernetwork import normalize_rows

    scores = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 2.0]])
    assert torch.equal(normalize_rows(scores, own=1), torch.tensor([[0.0, 1.0, 0.0], [0.25, 0.25, 0.5]]))


def test_k_above_the_number_of_layers_is_refused_before_any_data_is_read() -> None:
    from pfedhn.errors import ConfigError

    validation.validate(compose(["method=heurpfedla", "method.local_layers=5"]))
    refused = "method.local_layers: must be a non-negative integer, at most the target's 5 layers"
    with pytest.raises(ConfigError, match=refused):
        validation.validate(compose(["method=heurpfedla", "method.local_layers=6"]))


def test_a_heurpfedla_client_whose_node_restarted_is_sent_its_local_layers_again(data_root: Path) -> None:
    """Flower keeps Context.state in memory: a restarted node has lost the layers only it held.
    Its fit fails once; the server then sends its own copies of them, and the next fit trains."""
    cfg, heur = setup(data_root, "method=heurpfedla", "method.local_layers=2")
    heur.method.apply_updates(1, {1: fit(cfg, heur, 1, 1, RecordDict())})
    assert heur.method.holds[1]
    with pytest.raises(RuntimeError, match="keeps no .* and was not sent it"):
        fit(cfg, heur, 1, 2, RecordDict())  # the node restarted
    heur.aggregate_evaluate(2, [], [RuntimeError("keeps no conv1.weight and was not sent it")])
    assert heur.method.holds[1]  # an evaluation changes no store: its failure leaves what the client holds
    heur.outbox.awaited = {1: 0}
    heur.aggregate_fit(2, [], [RuntimeError("keeps no conv1.weight and was not sent it")])
    assert 1 not in heur.method.holds
    model = heur.method.client_model(1, 3, training=True)
    assert model.keep and set(model.keep) <= set(model.arrays)  # its local layers, sent once more
    heur.method.apply_updates(3, {1: fit(cfg, heur, 1, 3, RecordDict())})
    assert heur.method.holds[1]


def test_a_layer_leaving_the_top_k_brings_its_local_training_back_to_the_server(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HeurpFedLA: a held layer that α moves out of the top K is trained once more from the
    client's own copy, and the server stores that trained value (not one trained from its stale
    copy); then it is aggregated again. Evaluations in between use the client's copy."""
    cfg, heur = setup(data_root, "method=heurpfedla", "method.local_layers=1")
    state = RecordDict()
    monkeypatch.setattr(heur.method, "local_layers_of", lambda client, alpha: ["head"])
    heur.method.apply_updates(1, {1: fit(cfg, heur, 1, 1, state)})
    held = dict(state["kept"].to_torch_state_dict())
    assert set(held) == {"head.weight", "head.bias"}
    assert not torch.equal(held["head.weight"], heur.method.models.of(1)["head.weight"])  # trained on the client only
    evaluated = heur.method.client_model(1, 2, training=False)
    assert {"head.weight", "head.bias"} <= set(evaluated.keep) and "head.weight" not in evaluated.arrays
    monkeypatch.setattr(heur.method, "local_layers_of", lambda client, alpha: ["conv1"])
    evaluated = heur.method.client_model(1, 2, training=False)  # released at the next fit, still the client's now
    assert {"head.weight", "head.bias"} <= set(evaluated.keep) and "head.weight" not in evaluated.arrays
    model = heur.method.client_model(1, 2, training=True)
    assert model.release == ("head.weight", "head.bias") and set(model.keep) == {"conv1.weight", "conv1.bias"}
    # what the server must end with: the client's training of round 2 started from its own head
    arrays, config = message(heur, 1, 2, training=True)
    names = split_names(config["sent"])
    from_own = {**dict(zip(names, arrays)), **{n: t.numpy() for n, t in held.items()}}
    client = PersonalizedClient(1, cfg, copy.deepcopy(state))
    changes = client.fit([from_own[n] for n in names], {**config, "release": ""})[0]
    expected = {n: from_own[n] + c for n, c in zip(model.returned, changes, strict=True) if n.startswith("head.")}
    assert set(expected) == {"head.weight", "head.bias"}
    heur.method.apply_updates(2, {1: heur.outbox.reply(1, PersonalizedClient(1, cfg, state).fit(arrays, config)[0])})
    stored = heur.method.models.of(1)
    for name, value in expected.items():
        assert np.allclose(stored[name].numpy(), value, atol=1e-6), name
    assert set(state["kept"].to_torch_state_dict()) == {"conv1.weight", "conv1.bias"}  # the head is no longer kept
    assert heur.method.holds[1] == ("conv1.weight", "conv1.bias")
    assert heur.method.report()["releases"] == [0, 1, 0, 0]
    aggregated = heur.method.client_model(1, 3, training=True)  # from now on the head is aggregated
    assert "head.weight" in aggregated.returned and not {"head.weight"} & set(aggregated.keep + aggregated.release)


def test_a_heurpfedla_checkpoint_keeps_its_release_count_and_one_from_before_the_release_is_refused(
    data_root: Path,
) -> None:
    from pfedhn.errors import ConfigError

    _, heur = setup(data_root, "method=heurpfedla")
    heur.method.releases = [0, 2, 0, 1]
    state = copy.deepcopy(heur.method.server_state())
    heur.method.releases = [0] * NUM_CLIENTS
    heur.method.load_server_state(state)
    assert heur.method.releases == [0, 2, 0, 1]
    del state["releases"]  # a checkpoint of the code before commit f5df947
    with pytest.raises(ConfigError, match="resume: this HeurpFedLA checkpoint predates the release"):
        heur.method.load_server_state(state)
    _, plain = setup(data_root)
    plain_state = plain.method.server_state()
    del plain_state["releases"]
    plain.method.load_server_state(plain_state)  # pFedLA releases nothing: its old checkpoints still resume
