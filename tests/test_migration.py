"""Configs saved before a key moved under ``method.`` (results.json, checkpoints) still load."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pfedhn import config, validation
from pfedhn.checkpoint import Checkpoint
from pfedhn.main import run
from pfedhn.migration import migrate
from tests.conftest import ROOT, tiny_overrides

RUNS = sorted(path for kind in ("runs", "variants") for path in (ROOT / "results" / kind).glob("*/results.json"))


def legacy_layout(cfg: dict) -> dict:
    """``cfg`` as configs were saved before the redesign: pFedHN's ``hypernetwork``, ``sizes``
    and ``novel`` at the top level, and every method's config carrying them."""
    old = copy.deepcopy(cfg)
    method = old["method"]
    old["hypernetwork"] = (
        method.pop("hypernetwork")
        if "embed_dim" in method.get("hypernetwork", {}) and method.get("strategy") == "pfedhn"
        else {"embed_dim": None, "hidden_dim": 100, "n_hidden": 3}
    )
    old["model"]["sizes"] = method.pop("sizes", None)
    old["novel"] = method.pop("novel", {"clients": 0, "rounds": 0, "lr": None})
    return old


@pytest.mark.parametrize("path", RUNS, ids=[f"{p.parent.parent.name}/{p.parent.name}" for p in RUNS])
def test_every_committed_run_s_config_composes_today(path: Path) -> None:
    """Merged into today's config of its method and dataset (struct: an unknown key fails), the
    migrated config is valid; alone, as the tools that read a finished run take it
    (``pfedhn.novel_distance``), it names its data and target as today's code reads them."""
    saved = migrate(json.loads(path.read_text())["config"])
    composed = config.compose([f"method={saved['method']['name']}", f"dataset={saved['dataset']['name']}"])
    OmegaConf.set_struct(composed, True)
    validation.validate(OmegaConf.merge(composed, OmegaConf.create(saved)))
    alone = OmegaConf.create(saved)
    OmegaConf.set_struct(alone, True)
    config.data_settings(alone)
    config.model_spec(alone)


def test_migration_moves_pfedhn_s_keys_and_drops_them_elsewhere() -> None:
    pfedhn = config.compose(["method=pfedhn", "method.sizes=[2,3]", "method.novel.clients=5"])
    pfedla = config.compose(["method=pfedla"])
    for cfg in (pfedhn, pfedla):
        today = OmegaConf.to_container(cfg, resolve=True)
        assert migrate(legacy_layout(today)) == today


def test_a_checkpoint_saved_with_the_old_layout_resumes(data_root: Path, tmp_path: Path) -> None:
    args = tiny_overrides(data_root) + ["eval_every=2", "checkpoint_every=2", "method.hypernetwork.hidden_dim=8"]
    run(config.compose(args + ["num_rounds=2"]), tmp_path)
    path = tmp_path / "checkpoint.pt"
    checkpoint = Checkpoint.load(path)
    checkpoint.config = legacy_layout(checkpoint.config)
    assert "hypernetwork" in checkpoint.config and "novel" not in checkpoint.config["method"]
    checkpoint.save(path)
    resumed = run(config.compose(args + ["num_rounds=4"]), tmp_path)
    assert resumed is not None and [e.round for e in resumed.evaluations] == [1, 3, 4]
