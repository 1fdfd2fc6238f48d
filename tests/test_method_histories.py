"""Every method and variant gives the numbers it gave when the fixture was recorded.

``fixtures/method_histories.json`` holds the full evaluation history of a short tiny-data run
of every method and variant, recorded before a refactor (issue 35: "behaviour unchanged").
On a machine with the fixture's CPU (model name and vector extensions) every number must be equal
bit for bit; elsewhere oneDNN may pick other kernels, so only the first evaluation is compared,
losses to a relative 1e-3 and accuracies to 0.05.

    python -m tests.test_method_histories <data root of tiny data>   # re-record (after a deliberate change)
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import pytest

from pfedhn.config import compose
from pfedhn.main import run
from tests.conftest import tiny_overrides

FIXTURE = Path(__file__).parent / "fixtures" / "method_histories.json"
TINY_HN = ["method.hypernetwork.hidden_dim=8"]  # as the fixture was recorded
COMMON = ["num_rounds=4", "eval_every=2", "simulation.threads=1", "checkpoint_every=0"]
VARIANTS: dict[str, list[str]] = {  # name -> overrides beyond tiny_overrides(num_clients=6) + COMMON
    "pfedhn": ["method=pfedhn", *TINY_HN],
    "pfedhn_pc": ["method=pfedhn_pc", *TINY_HN],
    "pfedhn_sizes": ["method=pfedhn", *TINY_HN, "method.sizes=[2,3]"],
    "pfedhn_novel": ["method=pfedhn", *TINY_HN, "method.novel.clients=2", "method.novel.rounds=2"],
    "pfedla": ["method=pfedla", "clients_per_round=2"],
    "heurpfedla": ["method=heurpfedla", "clients_per_round=2"],
    "local": ["method=local", "clients_per_round=2"],
    "fedavg": ["method=fedavg", "clients_per_round=2"],
    "fedavg_ft": ["method=fedavg", "clients_per_round=2", "method.finetune_steps=2"],
    "fedper": ["method=fedper", "clients_per_round=2"],
    "lgfedavg": ["method=lgfedavg", "clients_per_round=2"],
    "perfedavg_fo": ["method=perfedavg", "clients_per_round=2"],
    "perfedavg_hf": ["method=perfedavg", "clients_per_round=2", "method.variant=hf"],
    "pfedme": ["method=pfedme", "clients_per_round=2"],
}


SIMD = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")  # what oneDNN picks kernels by


def cpu() -> str:
    """The CPU's model name and vector extensions (Linux), else the platform's processor string."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return platform.processor()
    fields = dict(line.split(":", 1) for line in cpuinfo.read_text().splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    return f"{fields.get('model name', '?')} [{' '.join(f for f in SIMD if f in flags)}]"


def history(data_root: Path, out: Path, variant: str) -> list[dict]:
    """The run's evaluations: round, and per split loss, accuracy and per-client accuracy."""
    cfg = compose(tiny_overrides(data_root, num_clients=6) + COMMON + VARIANTS[variant])
    result = run(cfg, out)
    return [
        {
            "round": e.round,
            **{
                split: {"loss": m.loss, "accuracy": m.accuracy, "client_accuracy": m.client_accuracy}
                for split, m in (("val", e.val), ("test", e.test))
            },
        }
        for e in result.evaluations
    ]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_method_gives_its_recorded_numbers(data_root: Path, tmp_path: Path, variant: str) -> None:
    recorded = json.loads(FIXTURE.read_text())
    got = history(data_root, tmp_path, variant)
    expected = recorded["histories"][variant]
    if recorded["cpu"] == cpu():
        assert got == expected
        return
    assert [e["round"] for e in got] == [e["round"] for e in expected]
    for split in ("val", "test"):  # the first evaluation: before rounding differences compound
        assert got[0][split]["loss"] == pytest.approx(expected[0][split]["loss"], rel=1e-3)
        assert got[0][split]["accuracy"] == pytest.approx(expected[0][split]["accuracy"], abs=0.05)


def record(data_root: Path) -> None:
    """Write the fixture from runs on ``data_root`` (tiny data: ``tests.conftest``'s writers)."""
    import tempfile

    histories = {}
    for variant in sorted(VARIANTS):
        with tempfile.TemporaryDirectory() as out:
            histories[variant] = history(data_root, Path(out), variant)
    FIXTURE.write_text(json.dumps({"cpu": cpu(), "histories": histories}, indent=1) + "\n")


if __name__ == "__main__":
    record(Path(sys.argv[1]))
