"""The private Flower names the in-process engine replaces, and the fallback when one changes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pfedhn import flower_internals
from pfedhn.flower_internals import INTERNALS, Internal
from pfedhn.simulation import InProcessBackend, choose_backend
from tests.conftest import ROOT, tiny_overrides


@pytest.mark.parametrize("internal", INTERNALS, ids=lambda internal: internal.name)
def test_each_replaced_flower_name_is_as_the_engine_expects(internal: Internal) -> None:
    """Fails, naming the name, when a Flower release changes one (then update the engine or
    let the run fall back; see EXTENDED_README.md, 'Flower internals')."""
    assert internal.problem() is None, f"{internal.name} ({internal.why})"


def test_the_in_process_backend_implements_every_abstract_method_of_flowers_backend() -> None:
    assert not InProcessBackend.__abstractmethods__


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def other(): pass", "fake_flower.f is gone"),
        ("def f(a, c):\n    b = a\n", "fake_flower.f takes (a, c), expected (a, b)"),
        ("def f(a, b):\n    return a\n", "fake_flower.f no longer contains 'b = a'"),
    ],
)
def test_a_changed_name_is_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str, expected: str
) -> None:
    (tmp_path / "fake_flower.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fake_flower", raising=False)
    internal = Internal("fake_flower", "f", ("a", "b"), "test", source_has="b = a")
    assert flower_internals.problems((internal,)) == [expected]


def test_an_unchanged_flower_keeps_the_chosen_backend() -> None:
    assert [choose_backend(b) for b in ("inprocess", "ray", "stock")] == ["inprocess", "ray", "stock"]


# A Flower whose message-queue loop takes one more parameter: what a release that
# changes a replaced name looks like. The loop still works, so the stock engine runs.
CHANGED_FLOWER = """
import sys
from flwr.server.superlink.fleet.vce import vce_api
stock = vce_api.add_messages_to_queue
def add_messages_to_queue(state, queue, nodes_mapping, f_stop, batch_size=1):
    return stock(state, queue, nodes_mapping, f_stop)
vce_api.add_messages_to_queue = add_messages_to_queue
import runpy
sys.argv = ["pfedhn.main", *sys.argv[1:]]
runpy.run_module("pfedhn.main", run_name="__main__")  # as python -m pfedhn.main
"""


def test_a_changed_flower_falls_back_to_the_stock_engine_with_the_same_numbers(data_root: Path, tmp_path: Path) -> None:
    """Thread settings match (the server's 2 threads on both), so the histories agree bitwise."""
    args = tiny_overrides(data_root) + [
        "num_rounds=3",
        "eval_every=1",
        "simulation.server_threads=2",
        "simulation.threads=2",
    ]
    normal = subprocess.run(
        [sys.executable, "-m", "pfedhn.main", *args, f"hydra.run.dir={tmp_path / 'inprocess'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert normal.returncode == 0, normal.stderr[-3000:]
    changed = subprocess.run(
        [sys.executable, "-c", CHANGED_FLOWER, *args, f"hydra.run.dir={tmp_path / 'fallback'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert changed.returncode == 0, changed.stderr[-3000:]
    log = changed.stdout + changed.stderr
    warnings = [line for line in log.splitlines() if "running Flower's stock engine instead" in line]
    assert len(warnings) == 1
    assert "vce_api.add_messages_to_queue takes (state, queue, nodes_mapping, f_stop, batch_size)" in warnings[0]
    results = {name: json.loads((tmp_path / name / "results.json").read_text()) for name in ("inprocess", "fallback")}
    assert [r["backend"] for r in results["fallback"]["provenance"]] == ["stock"]
    assert [r["backend"] for r in results["inprocess"]["provenance"]] == ["inprocess"]
    assert results["fallback"]["finished"]
    assert results["fallback"]["history"] == results["inprocess"]["history"]
