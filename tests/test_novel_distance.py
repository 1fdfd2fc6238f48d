"""The novel-client distance analysis (pfedhn/novel_distance.py) on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest

from pfedhn.novel_distance import class_histograms, nearest_tv, novel_clients, spearman


def test_class_histograms_are_each_clients_class_shares() -> None:
    shares = class_histograms([np.array([0, 0, 0, 1]), np.array([2, 2])], num_classes=3)
    np.testing.assert_allclose(shares, [[0.75, 0.25, 0.0], [0.0, 0.0, 1.0]])


def test_nearest_tv_is_half_the_l1_distance_to_the_closest_row() -> None:
    others = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])
    assert nearest_tv(np.array([0.0, 0.4, 0.6]), others) == (1, pytest.approx(0.1))
    assert nearest_tv(np.array([1.0, 0.0, 0.0]), others) == (0, pytest.approx(0.5))


def test_spearman_ranks_with_ties() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_novel_clients_take_their_accuracy_at_the_novel_groups_best_round() -> None:
    history = [
        {"round": r, "test": {"client_accuracy": acc, "client_count": [10] * 4}}
        for r, acc in ((3, [0.9, 0.9, 0.1, 0.2]), (5, [0.9, 0.9, 0.6, 0.7]))
    ]
    result = {
        "history": history,
        "groups": {"seen": {"clients": [0, 1], "best_val_round": 3}, "novel": {"clients": [2, 3], "best_val_round": 5}},
    }
    shares = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, 0.2], [0.5, 0.5]])
    found = novel_clients(result, shares)
    assert [(c.client, c.nearest_seen, c.accuracy) for c in found] == [(2, 0, 0.6), (3, 0, 0.7)]
    assert [c.distance for c in found] == pytest.approx([0.2, 0.5])


def test_spearman_of_a_constant_is_nan() -> None:
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
