"""Which value of one config key a set of runs chooses by validation.

    python docs/scripts/choose_by_validation.py results/runs results/variants \\
        --key method.sigma --where method.name=fedamp dataset.name=cifar10 dataset.classes_per_client=4

Reads every ``results.json`` under the directories whose config matches each ``--where``
(``dotted.key=value``, the value read as YAML: ``4`` matches 4 and 4.0) and prints a markdown
table with one row per value of ``--key`` (the runs must share one seed and differ in nothing
the table does not show, which is the reader's part): best validation accuracy and its round,
test accuracy there, rounds done, and where the run lies. The chosen value has the best
validation accuracy among the finished runs; a tie to two decimals goes to the earlier best
round (the value that got there first). Test accuracy is printed, never used.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, NamedTuple

import yaml


class Candidate(NamedTuple):
    """One run of the study: its value of the key, its results, and where they lie."""

    value: Any
    result: dict[str, Any]
    path: Path


def lookup(config: dict[str, Any], dotted: str) -> Any:
    """``config``'s value at ``dotted`` (``method.sigma``), or None where a key is missing."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def parse_where(pairs: list[str]) -> dict[str, Any]:
    """``["a.b=4", "c=x"]`` → ``{"a.b": 4, "c": "x"}``, each value read as YAML."""
    where = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--where takes dotted.key=value, got {pair!r}")
        where[key] = yaml.safe_load(value)
    return where


def shown(value: Any) -> str:
    """A key's value as the table prints it: numbers compactly (``1e-2`` → 0.01), the rest as is."""
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def candidates(dirs: list[Path], key: str, where: dict[str, Any]) -> list[Candidate]:
    """Every run under ``dirs`` matching ``where``, sorted by its value of ``key``.

    Raises ValueError if a run lacks ``key`` or two runs hold the same value (the choice would
    depend on which one is read first).
    """
    found: dict[Any, Candidate] = {}
    for directory in dirs:
        for path in sorted(directory.rglob("results.json")):
            result = json.loads(path.read_text())
            if any(lookup(result["config"], k) != v for k, v in where.items()):
                continue
            value = lookup(result["config"], key)
            if value is None:
                raise ValueError(f"{path.parent} matches --where but has no {key}")
            if value in found:
                raise ValueError(f"{key}={shown(value)} twice: {found[value].path.parent} and {path.parent}")
            found[value] = Candidate(value, result, path.parent)
    return sorted(found.values(), key=lambda c: c.value)


def chosen(study: list[Candidate]) -> Candidate | None:
    """The finished run with the best validation accuracy (to two decimals; ties: earlier round)."""
    finished = [c for c in study if c.result["finished"]]
    if not finished:
        return None
    return max(finished, key=lambda c: (round(100 * c.result["best_val_accuracy"], 2), -c.result["best_val_round"]))


def table(study: list[Candidate], key: str) -> str:
    """The study as markdown, the chosen value's row marked."""
    best = chosen(study)
    lines = [f"| {key} | best validation (round) | test there | rounds done | run |", "|---|---|---|---|---|"]
    for candidate in study:
        result = candidate.result
        done, planned = result["history"][-1]["round"], result["config"]["num_rounds"]
        mark = " (chosen)" if candidate is best else ""
        lines.append(
            f"| {shown(candidate.value)}{mark} | {100 * result['best_val_accuracy']:.2f} ({result['best_val_round']}) "
            f"| {100 * result['test_accuracy']:.2f} | {done}{'' if result['finished'] else f' of {planned}'} "
            f"| `{candidate.path}` |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--key", required=True, help="the dotted config key the runs differ in")
    parser.add_argument("--where", nargs="+", default=[], help="dotted.key=value filters, all must hold")
    args = parser.parse_args(argv)
    try:
        study = candidates(args.dirs, args.key, parse_where(args.where))
    except ValueError as error:
        parser.error(str(error))
    if not study:
        parser.error(f"no run under {[str(d) for d in args.dirs]} matches {args.where}")
    print(table(study, args.key))
    if chosen(study) is None:
        print("no run has finished: nothing is chosen yet")


if __name__ == "__main__":
    main()
