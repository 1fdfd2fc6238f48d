from __future__ import annotations

import pytest
import torch

from pfedhn.model import ModelSpec, TargetCNN, parameter_shapes


@pytest.mark.parametrize(("channels", "side", "flat"), [(1, 28, 32 * 4 * 4), (3, 32, 32 * 5 * 5)])
def test_target_cnn_shapes(channels: int, side: int, flat: int) -> None:
    model = TargetCNN(ModelSpec(channels, side, 10, 16))
    assert model.fc1.in_features == flat
    assert model(torch.zeros(5, channels, side, side)).shape == (5, 10)


def test_personal_head_is_left_out_of_the_generated_tensors() -> None:
    from pfedhn.config import compose
    from pfedhn.methods.pfedhn import generated_shapes

    spec = ModelSpec(3, 32, 100, 16)
    full = parameter_shapes(spec)
    body = generated_shapes(compose(["dataset=cifar100", "method=pfedhn_pc"]))
    convs = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"]
    assert list(full) == [*convs, "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "head.weight", "head.bias"]
    assert set(full) - set(body) == {"head.weight", "head.bias"}
    assert full["head.weight"] == (100, 84)
