"""docs/scripts/pfedla_alpha_gradient.py: α's push per layer, with HeurpFedLA's kept layers left out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, tiny_data

SCRIPT = ROOT / "docs" / "scripts" / "pfedla_alpha_gradient.py"
CLIENTS = 3


def rows(data_root: Path, tmp_path: Path, *method: str) -> list[dict]:
    """The script's rows for 2 rounds of a tiny MNIST run of ``method``'s overrides."""
    out = tmp_path / "push.json"
    tiny = [o for o in tiny_data(data_root) if not o.startswith("dataset.root=")]
    overrides = ["dataset=mnist", f"num_clients={CLIENTS}", "client.inner_steps=3", *tiny, *method]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(data_root), "--rounds", "2", "--rates", "0.25", "1.0"]
        + ["--json", str(out), "--overrides", *overrides],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())["rows"]


@pytest.mark.parametrize("kept", [1, 2])
def test_heurpfedla_leaves_each_clients_kept_layers_out(data_root: Path, tmp_path: Path, kept: int) -> None:
    found = rows(data_root, tmp_path, "method=heurpfedla", f"method.local_layers={kept}")
    for server_round in (1, 2):
        of_round = [r for r in found if r["round"] == server_round]
        assert sum(r["left_out"] for r in of_round) >= CLIENTS * kept  # kept, plus any released
        for r in of_round:
            assert (r["grad_mean_abs"] is None) == (r["left_out"] == CLIENTS)
            assert set(r["self_weight_move"]) == set(r["self_weight_step"]) == {"0.25", "1.0"}
            assert 0 < r["self_weight"] < 1


def test_pfedla_leaves_no_layer_out(data_root: Path, tmp_path: Path) -> None:
    found = rows(data_root, tmp_path, "method=pfedla")
    assert {r["left_out"] for r in found} == {0}
    assert all(r["grad_mean_abs"] > 0 and r["spread_max_abs"] >= 0 for r in found)
