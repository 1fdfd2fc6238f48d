from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pfedhn import summarize
from pfedhn.method import PaperValue
from pfedhn.summarize import accuracy_tables, curve_axis, find_runs, main, paper_table, tabled
from tests.conftest import ROOT


def write_run(
    directory: Path,
    method: str,
    seed: int,
    test_at_best: float,
    rounds: int = 61,
    planned: int = 61,
    provenance: list[dict] | None = None,
) -> None:
    history = []
    for i, r in enumerate(range(1, rounds + 1, 30)):
        val = 0.5 + 0.1 * i if r != 31 else 0.95  # the best validation is at round 31
        history.append(
            {
                "round": r,
                "val": {"loss": 1.0, "accuracy": val, "client_accuracy": [val, val]},
                "test": {"loss": 1.0, "accuracy": test_at_best if r == 31 else 0.1, "client_accuracy": [0.2, 0.4]},
            }
        )
    result = {
        "finished": rounds == planned,
        "config": {
            "method": {
                "name": method,
                "strategy": {"pfedhn_pc": "pfedhn", "heurpfedla": "pfedla"}.get(method, method),
                **({"personal_head": method == "pfedhn_pc"} if method.startswith("pfedhn") else {}),
            },
            "dataset": {"name": "cifar10"},
            "num_clients": 2,
            "seed": seed,
            "num_rounds": planned,
        },
        "history": history,
        "best_val_round": 31,
        "test_accuracy": test_at_best,
        "wall_time_s": 600.0,
        "provenance": provenance or [],
    }
    directory.mkdir(parents=True)
    (directory / "results.json").write_text(json.dumps(result))


def test_table_pools_seeds_and_states_scale(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_run(runs / "a", "pfedhn", 0, 0.80)
    versions = {"flwr": "1.41.0", "torch": "2.14.1", "torchvision": "0.29.1"}
    write_run(
        runs / "b",
        "pfedhn",
        1,
        0.90,
        provenance=[
            {"from_round": 0, "commit": "a" * 40, "dirty": False, **versions},
            {"from_round": 31, "commit": "b" * 40, "dirty": True, **versions, "flwr": "1.42.0"},
        ],
    )
    write_run(runs / "c", "pfedhn_pc", 0, 0.85, rounds=31, planned=5000)
    text = main([str(runs), "--table", str(tmp_path / "table.md"), "--static", str(tmp_path / "static")])
    assert "| pFedHN | 85.00 ± 5.00 (61 rounds, 2 seeds) |" in text
    assert "| pFedHN-PC | 85.00 (31 of 5000 rounds, unfinished, 1 seed) |" in text
    assert (
        "| pFedHN | CIFAR-10, 2 | 1 | 61 | flwr 1.41.0+1.42.0, torch 2.14.1, torchvision 0.29.1 "
        "| aaaaaaa+bbbbbbb (dirty) | 10 min |" in text
    )
    assert "| pFedHN | CIFAR-10, 2 | 0 | 61 | unrecorded | – | 10 min |" in text
    assert (tmp_path / "table.md").read_text().endswith(text + "\n")
    assert {p.name for p in (tmp_path / "static").iterdir()} == {"curve_cifar10_2.png", "clients_cifar10_2.png"}


def test_a_cell_shows_its_largest_finished_scale_only(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_run(runs / "short", "pfedhn", 0, 0.70, rounds=31, planned=31)
    write_run(runs / "long", "pfedhn", 0, 0.90)
    write_run(runs / "longer_unfinished", "pfedhn", 0, 0.99, rounds=31, planned=5000)
    text = main([str(runs), "--table", str(tmp_path / "table.md"), "--static", str(tmp_path / "static")])
    assert "| pFedHN | 90.00 (61 rounds, 1 seed) |" in text


def test_a_seed_twice_in_one_cell_is_refused(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_run(runs / "a", "pfedhn", 0, 0.70)
    write_run(runs / "b", "pfedhn", 0, 0.90)
    with pytest.raises(ValueError, match="same seed"):
        main([str(runs), "--table", str(tmp_path / "table.md"), "--static", str(tmp_path / "static")])


def test_novel_client_runs_get_their_own_table_and_plot(tmp_path: Path) -> None:
    history = [{"round": r, "val": 0.5, "test": 0.5} for r in (1, 4, 6)]
    result = {
        "config": {
            "dataset": {"name": "mnist"},
            "num_clients": 5,
            "seed": 0,
            "num_rounds": 4,
            "novel": {"clients": 1, "rounds": 2, "lr": None},
            "method": {"name": "pfedhn", "strategy": "pfedhn", "server": {"lr": 0.01, "embed_lr": 0.3}},
        },
        "history": [],
        "groups": {
            "seen": {"clients": [0, 1, 2, 3], "rounds": [1, 4], "test_accuracy": 0.9, "history": history},
            "novel": {"clients": [4], "rounds": [5, 6], "test_accuracy": 0.8, "history": history},
        },
    }
    (tmp_path / "runs" / "n").mkdir(parents=True)
    (tmp_path / "runs" / "n" / "results.json").write_text(json.dumps(result))
    text = main([str(tmp_path / "runs"), "--table", str(tmp_path / "t.md"), "--static", str(tmp_path / "s")])
    assert "| pFedHN | MNIST, 5 (1) | 4 (+ 2) | 0.3 | 90.00 | 80.00 | 10.00 | unrecorded |" in text
    assert (tmp_path / "s" / "novel_n.png").is_file()


def write_weighting_run(directory: Path, method: str, report: dict, **method_keys: float) -> None:
    """A 3-client run of ``method`` reporting ``report`` (client-pair weights): clients 0 and 1
    share class 1, client 2 shares no class with either."""
    write_run(directory, method, 0, 0.7)
    result = json.loads((directory / "results.json").read_text())
    result["client_classes"] = [[0, 1], [1, 2], [3, 4]]
    result["method_report"] = report
    result["config"]["method"] |= method_keys
    result["config"]["num_clients"] = 3
    (directory / "results.json").write_text(json.dumps(result))


def test_pfedla_alpha_is_summarized_against_shared_classes(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    alpha = [[0.5, 0.3, 0.2], [0.4, 0.4, 0.2], [0.1, 0.1, 0.8]]
    write_weighting_run(runs / "la", "pfedla", {"alpha": {"conv1": alpha, "fc1": alpha}})
    static = tmp_path / "static"
    text = main([str(runs), "--table", str(tmp_path / "t.md"), "--static", str(static)])
    # itself: (0.5 + 0.4 + 0.8) / 3; sharing: 0.3 and 0.4; the others: 0.2, 0.2, 0.1, 0.1
    assert "| pFedLA | CIFAR-10, 3 | 61 | fc1 | 0.567 | 0.350 | 0.150 |" in text
    assert (static / "alpha_la_fc1.png").is_file()


def test_fedamp_attention_is_summarized_against_shared_classes(tmp_path: Path) -> None:
    """FedAMP's ξ over whole models gets the same reading as pFedLA's α, with its σ beside it."""
    runs = tmp_path / "runs"
    attention = [[0.9, 0.08, 0.02], [0.1, 0.85, 0.05], [0.0, 0.01, 0.99]]
    write_weighting_run(runs / "amp", "fedamp", {"attention": attention}, sigma=10)
    static = tmp_path / "static"
    text = main([str(runs), "--table", str(tmp_path / "t.md"), "--static", str(static)])
    # itself: (0.9 + 0.85 + 0.99) / 3; sharing: 0.08 and 0.1; the others: 0.02, 0.05, 0.0, 0.01
    assert "| FedAMP | CIFAR-10, 3 | 61 | 10 | 0.913 | 0.090 | 0.020 |" in text
    assert (static / "attention_amp.png").is_file()


def test_fedfomo_affinity_is_summarized_against_shared_classes(tmp_path: Path) -> None:
    """FedFomo's affinity P (negative where a client's models raised another's loss) gets the same reading."""
    runs = tmp_path / "runs"
    affinity = [[-0.5, -4.0, -18.0], [-2.0, -0.3, -16.0], [-17.0, -15.0, -0.1]]
    write_weighting_run(runs / "fomo", "fedfomo", {"affinity": affinity})
    static = tmp_path / "static"
    text = main([str(runs), "--table", str(tmp_path / "t.md"), "--static", str(static)])
    # itself: (-0.5 - 0.3 - 0.1) / 3; sharing: -4 and -2; the others: -18, -16, -17, -15
    assert "| FedFomo | CIFAR-10, 3 | 61 | -0.300 | -3.000 | -16.500 |" in text
    assert "FedFomo's affinity P" in text
    assert (static / "affinity_fomo.png").is_file()


def test_cells_and_settings_state_the_budget_in_local_steps(tmp_path: Path) -> None:
    """Rows with another rounds × clients-per-round budget say so in local steps, and the settings
    table lists each row's budget, client optimizer (none for pFedMe, whose updates are its own)
    and method keys."""
    runs = tmp_path / "runs"
    for name, method, per_round in (
        ("h", {"name": "pfedhn", "strategy": "pfedhn", "personal_head": False}, 1),
        ("f", {"name": "fedavg", "strategy": "fedavg"}, 5),
        ("m", {"name": "pfedme", "strategy": "pfedme", "lamda": 15.0}, 5),
    ):
        write_run(runs / name, method["name"], 0, 0.8)
        path = runs / name / "results.json"
        result = json.loads(path.read_text())
        result["config"] |= {
            "method": {**method, "finetune_steps": 50} if name == "f" else method,
            "clients_per_round": per_round,
            "eval_every": 30 if per_round == 1 else 6,
            "client": {"inner_steps": 50, "epochs": None, "batch_size": 64, "lr": 0.005, "momentum": 0.9,
                       "weight_decay": 5e-5},
        }  # fmt: skip
        path.write_text(json.dumps(result))
    text = main([str(runs), "--table", str(tmp_path / "table.md"), "--static", str(tmp_path / "static")])
    assert "| pFedHN | 80.00 (61 rounds, 3.05k steps, 1 seed) |" in text
    assert "| FedAvg+FT | 80.00 (61 rounds, 15.25k steps, 1 seed) |" in text
    assert (
        "| FedAvg+FT | CIFAR-10, 2 | 61 × 5 × 50 = 15,250 | 64, (0.005, 0.9, 5e-05) | 6 | finetune_steps=50 |" in text
    )
    assert "| pFedHN | CIFAR-10, 2 | 61 × 1 × 50 = 3,050 | 64, (0.005, 0.9, 5e-05) | 30 | personal_head=False |" in text
    assert "| pFedMe | CIFAR-10, 2 | 61 × 5 × 50 = 15,250 | 64, (–, –, –) | 6 | lamda=15.0 |" in text


def test_a_split_with_other_classes_per_client_gets_its_own_table(tmp_path: Path) -> None:
    """pFedLA's presets (4 classes per client on CIFAR-10) are not pooled with pFedHN's split:
    they are a column of a second table, after the first."""
    runs = tmp_path / "runs"
    write_run(runs / "a", "pfedhn", 0, 0.8)
    write_run(runs / "b", "pfedla", 0, 0.7)
    path = runs / "b" / "results.json"
    result = json.loads(path.read_text())
    result["config"]["dataset"]["classes_per_client"] = 4
    path.write_text(json.dumps(result))
    text = main([str(runs), "--table", str(tmp_path / "table.md"), "--static", str(tmp_path / "static")])
    shared, own = (block for block in text.split("\n\n") if block.startswith("| method | CIFAR"))
    assert shared == "| method | CIFAR-10, 2 clients |\n|---|---|\n| pFedHN | 80.00 (61 rounds, 1 seed) |"
    assert own == (
        "| method | CIFAR-10 (4 classes per client), 2 clients |\n|---|---|\n| pFedLA | 70.00 (61 rounds, 1 seed) |"
    )
    assert text.index(shared) < text.index("another number of classes than their dataset's default") < text.index(own)


def test_runs_counting_epochs_state_their_budget_in_client_epochs(tmp_path: Path) -> None:
    """pFedLA's setting counts local work in epochs: rounds × clients per round × epochs."""
    runs = tmp_path / "runs"
    for name, method, per_round, rounds in (("l", "pfedla", 10, 61), ("h", "pfedhn", 1, 601)):
        write_run(runs / name, method, 0, 0.7, rounds=rounds, planned=rounds)
        path = runs / name / "results.json"
        result = json.loads(path.read_text())
        result["config"] |= {"clients_per_round": per_round, "client": {"epochs": 10, "inner_steps": 50}}
        path.write_text(json.dumps(result))
    text = main([str(runs), "--table", str(tmp_path / "table.md"), "--static", str(tmp_path / "static")])
    assert "| pFedHN | 70.00 (601 rounds, 6.01k client-epochs, 1 seed) |" in text
    assert "| pFedLA | 70.00 (61 rounds, 6.1k client-epochs, 1 seed) |" in text


def test_a_cell_whose_runs_collapsed_after_their_best_round_shows_their_end(tmp_path: Path) -> None:
    """A run that ends more than 10 points below its reported (best-validation) accuracy says where
    it ended; one that ends within 10 points, or does not record its end, does not."""
    runs = tmp_path / "runs"
    for name, method, final in (("p", "perfedavg", 0.0167), ("f", "fedavg", 0.30), ("h", "pfedhn", None)):
        write_run(runs / name, method, 0, 0.3857)
        if final is not None:
            path = runs / name / "results.json"
            path.write_text(json.dumps(json.loads(path.read_text()) | {"final_test_accuracy": final}))
    text = main([str(runs), "--table", str(tmp_path / "table.md"), "--static", str(tmp_path / "static")])
    assert "| Per-FedAvg (FO) | 38.57 (61 rounds, 1 seed; last round 1.67) |" in text
    assert "| FedAvg | 38.57 (61 rounds, 1 seed) |" in text
    assert "| pFedHN | 38.57 (61 rounds, 1 seed) |" in text


@pytest.mark.parametrize(
    ("epochs", "expected"),
    [(10, ({"pfedla": 10, "pfedhn": 1}, "client-rounds")), (None, ({"pfedla": 500, "pfedhn": 50}, "local SGD steps"))],
)
def test_curves_run_against_local_steps_else_client_rounds(
    tmp_path: Path, epochs: int | None, expected: tuple[dict[str, int], str]
) -> None:
    """In pFedLA's setting (local work in epochs) pFedLA's 100 rounds of 10 clients and pFedHN's
    1000 of one end at the same x: client-rounds; where runs count steps, the x is the steps."""
    runs = tmp_path / "runs"
    for name, method, per_round in (("l", "pfedla", 10), ("h", "pfedhn", 1)):
        write_run(runs / name, method, 0, 0.7)
        path = runs / name / "results.json"
        result = json.loads(path.read_text())
        result["config"] |= {"clients_per_round": per_round, "client": {"epochs": epochs, "inner_steps": 50}}
        path.write_text(json.dumps(result))
    scales, label = curve_axis({run.method: [run] for run in find_runs([runs])})
    assert (scales, label.split(" (")[0].split(",")[0]) == expected


def test_client_rounds_refuse_seeds_that_differ_in_clients_a_round(tmp_path: Path) -> None:
    """Two seeds of one method with 10 and 1 clients a round have no common client-rounds axis."""
    runs = tmp_path / "runs"
    for name, seed, per_round in (("a", 0, 10), ("b", 1, 1)):
        write_run(runs / name, "pfedla", seed, 0.7)
        path = runs / name / "results.json"
        result = json.loads(path.read_text())
        result["config"] |= {"clients_per_round": per_round, "client": {"epochs": 10, "inner_steps": 50}}
        path.write_text(json.dumps(result))
    with pytest.raises(ValueError, match=r"\['pfedla'\] differ in clients_per_round"):
        curve_axis({"pfedla": find_runs([runs])})


def test_seed_bands_match_evaluations_by_round(tmp_path: Path) -> None:
    """A seed with an evaluation missing (a failed client) or one more (an extended run) is
    matched round by round, not by position."""
    from pfedhn.summarize import accuracy_at_shared_rounds, find_runs

    write_run(tmp_path / "a", "pfedhn", 0, 0.80, rounds=91, planned=91)  # rounds 1, 31, 61, 91
    write_run(tmp_path / "b", "pfedhn", 1, 0.90, rounds=91, planned=91)
    path = tmp_path / "b" / "results.json"
    result = json.loads(path.read_text())
    del result["history"][0]  # round 1 missing
    path.write_text(json.dumps(result))
    rounds, values = accuracy_at_shared_rounds(find_runs([tmp_path]), "test")
    assert rounds.tolist() == [31, 61, 91]
    assert values.tolist() == [[80.0, 10.0, 10.0], [90.0, 10.0, 10.0]]


def test_pfedla_with_local_layers_is_heurpfedla_s_row() -> None:
    from pfedhn.methods import row_key

    as_preset = row_key({"method": {"name": "heurpfedla", "strategy": "pfedla", "local_layers": 1}})
    assert as_preset == row_key({"method": {"name": "pfedla", "strategy": "pfedla", "local_layers": 1}})
    assert as_preset == "heurpfedla_k1"


def test_pfedhn_with_a_personal_head_is_pfedhn_pc_s_row() -> None:
    from pfedhn.methods import row_key

    as_preset = {"name": "pfedhn_pc", "strategy": "pfedhn", "personal_head": True, "sizes": None}
    assert row_key({"method": as_preset}) == row_key({"method": {**as_preset, "name": "pfedhn"}}) == "pfedhn_pc"
    assert row_key({"method": {**as_preset, "personal_head": False}}) == "pfedhn"
    assert row_key({"method": {**as_preset, "sizes": [8, 16]}}) == "pfedhn_pc_sizes_8_16"


def write_sized_pair(runs: Path, twin_counts: list[int]) -> None:
    """A multi-size run (sizes 8, 16 over 4 clients) and its one-size twin on the same split."""

    def evaluation(r: int, accuracy: list[float], counts: list[int]) -> dict:
        split = {"loss": 1.0, "accuracy": 0.0, "client_accuracy": accuracy, "client_count": counts}
        return {"round": r, "val": {**split, "accuracy": 0.5 + r / 100}, "test": split}

    counts = [10, 30, 20, 40]
    for name, sizes, accuracy in (("multi", [8, 16], [0.5, 0.9, 0.7, 0.6]), ("one", None, [0.4, 0.8, 0.2, 1.0])):
        cfg = {
            "method": {"name": "pfedhn", "strategy": "pfedhn"},
            "dataset": {"name": "cifar10"},
            "model": {"n_kernels": 16, "sizes": sizes},
            "num_clients": 4,
            "seed": 3,
            "num_rounds": 2,
        }
        history = [evaluation(1, [0.1] * 4, counts), evaluation(2, accuracy, twin_counts if name == "one" else counts)]
        groups = {"k8": {"clients": [0, 2]}, "k16": {"clients": [1, 3]}} if sizes else {}
        result = {"config": cfg, "history": history, "best_val_round": 2, "test_accuracy": 0.0, "groups": groups}
        (runs / name).mkdir(parents=True)
        (runs / name / "results.json").write_text(json.dumps(result))


def test_each_size_is_set_beside_the_same_clients_in_the_one_size_run(tmp_path: Path) -> None:
    write_sized_pair(tmp_path / "runs", twin_counts=[10, 30, 20, 40])
    text = main([str(tmp_path / "runs"), "--table", str(tmp_path / "t.md"), "--static", str(tmp_path / "s")])
    # size 8: clients 0, 2 pooled (0.5*10 + 0.7*20) / 30; one size: (0.4*10 + 0.2*20) / 30
    assert "| pFedHN, n_kernels 8 / 16 | CIFAR-10, 4 | 2 | 8 | 2 | 63.33 | 26.67 (n_kernels 16, 2 rounds) |" in text
    assert "| pFedHN, n_kernels 8 / 16 | CIFAR-10, 4 | 2 | 16 | 2 | 72.86 | 91.43 (n_kernels 16, 2 rounds) |" in text
    assert (tmp_path / "s" / "sizes_multi.png").is_file()


def test_a_multi_size_row_follows_its_one_size_row() -> None:
    from pfedhn.summarize import _row_order

    found = ["pfedhn_pc", "pfedhn_sizes_8_16_32", "pfedme", "pfedhn"]  # in any order, e.g. a set's
    assert sorted(found, key=_row_order) == ["pfedme", "pfedhn", "pfedhn_sizes_8_16_32", "pfedhn_pc"]
    assert sorted(reversed(found), key=_row_order) == sorted(found, key=_row_order)


def test_a_one_size_run_on_another_split_is_refused_as_twin(tmp_path: Path) -> None:
    write_sized_pair(tmp_path / "runs", twin_counts=[10, 30, 20, 41])
    with pytest.raises(ValueError, match="not the same split"):
        main([str(tmp_path / "runs"), "--table", str(tmp_path / "t.md"), "--static", str(tmp_path / "s")])


def test_committed_tables_are_what_the_summarizer_makes_of_the_committed_runs() -> None:
    """results/table.md's accuracy tables (pFedHN's splits, pFedLA's setting) are the summarizer's
    of the committed runs, and README quotes results/table.md's tables as they are."""
    runs = tabled(find_runs([ROOT / "results" / "runs"]))
    for accuracy in accuracy_tables(runs):
        assert accuracy.count("\n") >= 3  # the committed runs were found
        assert accuracy in (ROOT / "results" / "table.md").read_text(), "rerun python -m pfedhn.summarize results/runs"


def test_readme_quotes_the_committed_tables_as_they_are(tmp_path: Path) -> None:
    """README's five quoted tables are results/table.md's (else: python docs/scripts/readme_tables.py)."""
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    script = ROOT / "docs" / "scripts" / "readme_tables.py"
    table_md = ROOT / "results" / "table.md"
    subprocess.run([sys.executable, str(script), "--table", str(table_md), "--readme", str(readme)], check=True)
    assert readme.read_text() == (ROOT / "README.md").read_text(), "python docs/scripts/readme_tables.py"


def test_a_published_value_is_set_against_the_better_of_its_rows(tmp_path: Path, monkeypatch) -> None:
    """``paper_table``: the row with the better mean over seeds, its difference and the one-point verdict."""
    listing = PaperValue("cifar10", 2, 90.0, None, ("pfedhn", "pfedhn_pc"), "a listing")
    verified = PaperValue("cifar10", 2, 85.5, 0.3, ("pfedhn",), "paper")
    missing = PaperValue("cifar100", 2, 60.0, None, ("pfedhn",), "paper")
    edge = PaperValue("cifar10", 2, 87.004, None, ("pfedhn_pc", "pfedla"), "a listing")
    monkeypatch.setattr(summarize, "paper_values", lambda: [listing, verified, missing, edge])
    runs = tmp_path / "runs"
    write_run(runs / "a", "pfedhn", 0, 0.80)
    write_run(runs / "b", "pfedhn", 1, 0.90)
    write_run(runs / "c", "pfedhn_pc", 0, 0.86)
    lines = paper_table(tabled(find_runs([runs]))).splitlines()
    assert lines[2] == (
        "| CIFAR-10, 2 clients | 90.00 | a listing | pFedHN-PC (the better of pFedHN / pFedHN-PC) "
        "| pFedHN-PC 86.00 (61 rounds, 1 seed); pFedHN 85.00 ± 5.00 (61 rounds, 2 seeds) | -4.00 | no |"
    )
    assert lines[3] == (
        "| CIFAR-10, 2 clients | 85.50 ± 0.30 | paper | pFedHN | 85.00 ± 5.00 (61 rounds, 2 seeds) | -0.50 | yes |"
    )
    assert lines[4] == "| CIFAR-100, 2 clients | 60.00 | paper | – | no run | – | – |"
    assert lines[5] == (  # judged on the difference as shown; a row without runs is named
        "| CIFAR-10, 2 clients | 87.00 | a listing | pFedHN-PC (pFedLA not run) "
        "| 86.00 (61 rounds, 1 seed) | -1.00 | yes |"
    )


def test_readme_tables_replaces_each_quoted_table_and_refuses_a_missing_one(tmp_path: Path) -> None:
    """docs/scripts/readme_tables.py puts results/table.md's five quoted tables into README in place."""
    script = ROOT / "docs" / "scripts" / "readme_tables.py"
    headers = [
        "| method | MNIST, 10 clients |",
        "| method | CIFAR-10 (4 classes per client), 10 |",
        "| cell | published |",
        "| method | dataset, clients | rounds | size (n_kernels) |",
        "| method | dataset, clients (novel) |",
    ]
    old = [f"{header}\n|---|\n| old {i} |" for i, header in enumerate(headers)]
    new = [f"{header}\n|---|\n| new {i} |\n| more |" for i, header in enumerate(headers)]
    readme, table_md = tmp_path / "README.md", tmp_path / "table.md"
    readme.write_text("# title\n\n" + "\n\ntext\n\n".join(old) + "\n\nend\n")
    table_md.write_text("header\n\n" + "\n\nother\n\n".join(new) + "\n\n| method | dataset, clients |\n")
    run = [sys.executable, str(script), "--table", str(table_md), "--readme", str(readme)]
    subprocess.run(run, check=True)
    assert readme.read_text() == "# title\n\n" + "\n\ntext\n\n".join(new) + "\n\nend\n"
    table_md.write_text("header\n\n" + new[0] + "\n")
    failed = subprocess.run(run, capture_output=True, text=True)
    assert failed.returncode != 0 and "| cell | published" in failed.stderr


@pytest.mark.filterwarnings("ignore:No artists with labels")  # the curves are recorded, not drawn
def test_a_row_has_one_colour_in_every_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    for name in ("local", "fedper"):
        write_run(runs / f"two_clients_{name}", name, 0, 0.8)
    for name in ("local", "fedavg", "fedper"):  # FedAvg sits between the two in table order
        write_run(runs / f"three_clients_{name}", name, 0, 0.8)
        path = runs / f"three_clients_{name}" / "results.json"
        result = json.loads(path.read_text())
        result["config"]["num_clients"] = 3
        path.write_text(json.dumps(result))
    drawn: dict[str, set] = {}

    def record(ax, runs, split, style, label, color, per_round) -> None:  # noqa: ANN001
        drawn.setdefault(label, set()).add(tuple(color))

    monkeypatch.setattr(summarize, "_band", record)
    main([str(runs), "--table", str(tmp_path / "t.md"), "--static", str(tmp_path / "s")])
    colours = {label: shades for label, shades in drawn.items() if label != "_nolegend_"}
    assert set(colours) == {"Local (1 seed)", "FedAvg (1 seed)", "FedPer (1 seed)"}
    assert all(len(shades) == 1 for shades in colours.values())
    assert len({shade for shades in colours.values() for shade in shades}) == 3
