from __future__ import annotations

import torch

from pfedhn.hypernetwork import HyperNetwork, delta_gradients, make_hypernetwork_optimizer, step_toward_trained
from pfedhn.model import ModelSpec, TargetCNN, parameter_shapes

SPEC = ModelSpec(3, 32, 10, 4)


def make(num_clients: int = 5) -> HyperNetwork:
    torch.manual_seed(0)
    return HyperNetwork(parameter_shapes(SPEC), num_clients, embed_dim=3, hidden_dim=16, n_hidden=3)


def hypernetwork_gradients(hnet: HyperNetwork, client: int, delta: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """``delta_gradients`` of all of ``hnet``'s parameters, generating with ``hnet`` itself."""
    return delta_gradients(list(hnet.parameters()), lambda c, names: hnet(c, names), client, delta)[0]


def step_hypernetwork(hnet: HyperNetwork, optimizer, deltas, grad_clip: float) -> float:
    return step_toward_trained(optimizer, lambda c, names: hnet(c, names), deltas, grad_clip)[0]


def random_delta(hnet: HyperNetwork, scale: float = 0.1) -> dict[str, torch.Tensor]:
    return {name: scale * torch.randn(shape) for name, shape in hnet.shapes.items()}


def test_generated_weights_load_into_the_target_exactly() -> None:
    target = TargetCNN(SPEC)
    generated = make()(2)
    target.load_state_dict(generated, strict=True)  # the names are the target's, no more, no fewer
    shapes = [(name, tuple(tensor.shape)) for name, tensor in generated.items()]
    assert shapes == [(name, tuple(p.shape)) for name, p in target.named_parameters()]  # and in the target's order


def test_architecture_matches_the_paper() -> None:
    hnet = make()
    linears = [m for m in hnet.mlp if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 4  # first layer + n_hidden=3 blocks
    assert len(hnet.heads) == len(list(TargetCNN(SPEC).parameters()))


def test_vjp_equals_the_gradient_of_the_inner_product() -> None:
    hnet = make()
    delta = random_delta(hnet)
    vjp = hypernetwork_gradients(hnet, 1, delta)
    # another way: autograd of the scalar sum(θ̃ · (−Δ)) = ½‖θ̃ − (θ̃ + Δ)‖² up to a constant's gradient
    hnet.zero_grad()
    generated = hnet(1)
    sum(-(generated[k] * delta[k]).sum() for k in generated).backward()
    for got, param in zip(vjp, hnet.parameters()):
        torch.testing.assert_close(got, param.grad)


def test_only_the_sampled_embedding_gets_gradient() -> None:
    hnet = make()
    grads = dict(zip([n for n, _ in hnet.named_parameters()], hypernetwork_gradients(hnet, 3, random_delta(hnet))))
    rows = grads["embeddings.weight"].abs().sum(1)
    assert rows[3] > 0 and torch.count_nonzero(rows) == 1


def test_only_the_sampled_embedding_moves_without_weight_decay() -> None:
    hnet = make()
    before = hnet.embeddings.weight.detach().clone()
    optimizer = make_hypernetwork_optimizer(hnet, lr=1e-2, embed_lr=None, momentum=0.9, weight_decay=0.0)
    step_hypernetwork(hnet, optimizer, {3: random_delta(hnet)}, grad_clip=50.0)
    moved = (hnet.embeddings.weight.detach() - before).abs().sum(1) > 0
    assert moved.tolist() == [False, False, False, True, False]


def test_a_small_step_brings_the_generated_model_toward_the_trained_one() -> None:
    hnet = make()
    delta = random_delta(hnet)
    with torch.no_grad():
        trained = {k: v + delta[k] for k, v in hnet(0).items()}

    def distance() -> float:
        with torch.no_grad():
            return sum(float(((v - trained[k]) ** 2).sum()) for k, v in hnet(0).items())

    start = distance()
    optimizer = make_hypernetwork_optimizer(hnet, lr=1e-4, embed_lr=None, momentum=0.9, weight_decay=1e-3)
    step_hypernetwork(hnet, optimizer, {0: delta}, grad_clip=50.0)
    assert distance() < start


def test_several_clients_average_their_gradients() -> None:
    hnet = make()
    deltas = {0: random_delta(hnet), 2: random_delta(hnet)}
    expected = [(a + b) / 2 for a, b in zip(*(hypernetwork_gradients(hnet, c, d) for c, d in deltas.items()))]
    optimizer = make_hypernetwork_optimizer(hnet, lr=0.0 + 1e-12, embed_lr=None, momentum=0.0, weight_decay=0.0)
    step_hypernetwork(hnet, optimizer, deltas, grad_clip=1e9)
    for param, grad in zip(hnet.parameters(), expected):
        torch.testing.assert_close(param.grad, grad)


def test_embedding_learning_rate_is_its_own_group() -> None:
    hnet = make()
    optimizer = make_hypernetwork_optimizer(hnet, lr=1e-2, embed_lr=5e-2, momentum=0.9, weight_decay=1e-3)
    body, embeddings = optimizer.param_groups
    assert embeddings["lr"] == 5e-2 and body["lr"] == 1e-2
    assert embeddings["params"] == [hnet.embeddings.weight]


def test_generating_several_clients_at_once_equals_one_at_a_time() -> None:
    hnet = HyperNetwork(parameter_shapes(SPEC), num_clients=7, embed_dim=3, hidden_dim=16, n_hidden=3)
    with torch.no_grad():
        together = hnet.generate([5, 0, 3])
        for client, generated in zip([5, 0, 3], together):
            alone = hnet(client)
            assert list(generated) == list(alone)
            for name in alone:
                torch.testing.assert_close(generated[name], alone[name], rtol=1e-5, atol=1e-6)
