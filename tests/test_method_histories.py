"""Every method and variant gives the numbers it gave when the fixture was recorded.

``fixtures/method_histories.json`` holds the full evaluation history of a short tiny-data run
of every method and variant, recorded before a refactor (issue 35: "behaviour unchanged").
On a machine with the fixture's CPU (model name and vector extensions) every number must be equal
bit for bit; elsewhere oneDNN and ATen may pick other kernels, so every evaluation's losses are
compared to a relative ``LOSS_RTOL`` and accuracies to ``ACCURACY_ATOL``. Forcing the plainest
kernels on the fixture's CPU (``ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41``) moved no
accuracy and no loss by more than 1.3e-7 relative over all evaluations, while the two closest
variants (Per-FedAvg FO and HF) lie 3.9e-5 apart: ``drift`` below prints both.

    python -m tests.test_method_histories record <data root of tiny data>  # after a deliberate change
    python -m tests.test_method_histories drift <data root of tiny data>   # this run against the fixture
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
LOSS_RTOL, ACCURACY_ATOL = 1e-5, 0.03  # on another CPU: under the variants' 3.9e-5, over 77x the kernels' drift
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
    "fedamp": ["method=fedamp", "clients_per_round=2"],
    "fedfomo": ["method=fedfomo", "clients_per_round=6"],  # with 2 a round, no candidate improves here: Local
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
    for ours, theirs in zip(got, expected):
        for split in ("val", "test"):
            assert ours[split]["loss"] == pytest.approx(theirs[split]["loss"], rel=LOSS_RTOL)
            assert ours[split]["accuracy"] == pytest.approx(theirs[split]["accuracy"], abs=ACCURACY_ATOL)


def record(data_root: Path) -> None:
    """Write the fixture from runs on ``data_root`` (tiny data: ``tests.conftest``'s writers)."""
    import tempfile

    histories = {}
    for variant in sorted(VARIANTS):
        with tempfile.TemporaryDirectory() as out:
            histories[variant] = history(data_root, Path(out), variant)
    FIXTURE.write_text(json.dumps({"cpu": cpu(), "histories": histories}, indent=1) + "\n")


def largest_drift(ours: list[dict], theirs: list[dict]) -> tuple[float, float]:
    """(largest relative loss difference, largest accuracy difference) over two histories' evaluations."""
    pairs = [(a[split], b[split]) for a, b in zip(ours, theirs) for split in ("val", "test")]
    loss = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in pairs)
    return loss, max(abs(a["accuracy"] - b["accuracy"]) for a, b in pairs)


def drift(data_root: Path) -> None:
    """Print each variant's drift from the fixture on this machine, then the two closest variants'
    distance in the fixture (the margin a tolerance must stay under)."""
    import itertools
    import tempfile

    recorded = json.loads(FIXTURE.read_text())["histories"]
    for variant in sorted(VARIANTS):
        with tempfile.TemporaryDirectory() as out:
            loss, accuracy = largest_drift(history(data_root, Path(out), variant), recorded[variant])
        print(f"{variant}: loss {loss:.2e} relative, accuracy {accuracy:.4f}", flush=True)
    pairs = itertools.combinations(sorted(VARIANTS), 2)
    apart = [(largest_drift(recorded[a], recorded[b]), a, b) for a, b in pairs if len(recorded[a]) == len(recorded[b])]
    print("closest variants:", min(apart))


if __name__ == "__main__":
    {"record": record, "drift": drift}[sys.argv[1]](Path(sys.argv[2]))
