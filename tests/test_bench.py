"""The benchmark runs end to end on tiny data (timings are not checked here)."""

from __future__ import annotations

import json
from pathlib import Path

from pfedhn.bench import MARK_END, MARK_START, main


def test_benchmark_runs_and_writes_its_outputs(data_root: Path, tmp_path: Path) -> None:
    docs = tmp_path / "performance.md"
    docs.write_text(f"# Performance\n\nprose above\n\n{MARK_START}\nold\n{MARK_END}\n\nprose below\n")
    out = tmp_path / "bench.json"
    main(
        ["--root", str(data_root), "--tiny", "--rounds", "4", "--warmup", "1", "--json", str(out), "--docs", str(docs)]
    )
    saved = json.loads(out.read_text())
    results = saved["results"]
    assert saved["machine"]["device"] == "cpu"  # --device defaults to cpu
    assert set(results["mnist/4 (cpu)"]) == {"bare", "flower", "flower-ray", "reference"}
    for run in results["mnist/4 (cpu)"].values():
        assert run["round_s"] > 0 and run["peak_rss_mb"] > 0
    evaluation = results["mnist/2 (cpu)"]["evaluation"]
    assert evaluation["evaluation_s"] > 0 and evaluation["images"] > 0
    text = docs.read_text()
    assert "| mnist/2 (cpu) | " in text.split("s / evaluation of all clients")[1]
    assert "prose above" in text and "prose below" in text and "old" not in text
    assert "b/a (flower/bare)" in text and "| mnist/4 (cpu) | bare |" in text
