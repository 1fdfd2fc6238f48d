"""Where each job of a run queue (docs/scripts/run_queue.sh) stands, one line a job.

    python docs/scripts/queue_status.py docs/scripts/queue.txt /work/grid-runs

A job is ``finished`` (its results.json in RUNS_DIR says so, or the one landed in the
checkout's ``results/runs/<name>`` or ``results/variants/<name>``, or in ``<dir>/<name>`` for a
dir of ``$LANDED_RUNS``, a ``:``-separated list: run_queue.sh skips them all),
``running`` (a worker holds its lock), ``stopped`` (a results.json from a checkpoint: the
queue resumes it from there) or ``waiting`` (not begun). Rounds are the last evaluated one of
the run's schedule; accuracy is the pooled test accuracy at the best validation so far; a
running job adds the minutes it has left at its pace between evaluations (``time_left``).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pfedhn.methods import total_rounds
from pfedhn.migration import migrate

RESULTS = Path(__file__).resolve().parents[2] / "results"
LANDED_RUNS = [Path(d) for d in os.environ.get("LANDED_RUNS", f"{RESULTS / 'runs'}:{RESULTS / 'variants'}").split(":")]


def queued_names(jobs_file: Path) -> list[str]:
    """The job names of ``jobs_file``, in order (a line: ``<name> <overrides>``; ``#`` comments)."""
    lines = (line.split(maxsplit=1) for line in jobs_file.read_text().splitlines())
    return [words[0] for words in lines if words and not words[0].startswith("#")]


def lock_is_held(lock: Path) -> bool:
    """Whether a worker holds ``lock`` (run_queue.sh's flock on ``<runs>/<name>.lock``)."""
    if not lock.exists():
        return False
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def time_left(result: dict[str, Any], total: int, since_written: float) -> str:
    """ "about N min left" for a run at its pace: seconds a round between the evaluations of its
    current process (those after the last ``provenance`` record's ``from_round``; over the whole
    run while that process has evaluated fewer than twice), from ``eval_wall_time_s`` (the run's
    wall time at each evaluation), less the ``since_written`` seconds since its last evaluation
    wrote ``results.json``; "" before its first evaluation."""
    rounds, walls = [h["round"] for h in result["history"]], result.get("eval_wall_time_s") or []
    if not rounds or len(walls) != len(rounds) or rounds[-1] <= 0:
        return ""
    first = (result.get("provenance") or [{}])[-1].get("from_round", 0)
    current = [i for i, r in enumerate(rounds) if r > first]
    if len(current) >= 2:
        pace = (walls[current[-1]] - walls[current[0]]) / (rounds[current[-1]] - rounds[current[0]])
    else:
        pace = walls[-1] / rounds[-1]
    return f"  about {max(pace * (total - rounds[-1]) - since_written, 0) / 60:.0f} min left"


def job_status(runs_dir: Path, name: str, now: datetime) -> str:
    """One line: name, state, last evaluated round of the schedule, best-validation test accuracy."""
    results_file = runs_dir / name / "results.json"
    landed = [d / name / "results.json" for d in LANDED_RUNS if (d / name / "results.json").exists()]
    if not results_file.exists() and landed:
        results_file = landed[0]  # landed: reported, and skipped by the workers
    running = lock_is_held(runs_dir / f"{name}.lock")
    if not results_file.exists():
        return f"{name}  {'running' if running else 'waiting'}"
    result = json.loads(results_file.read_text())
    state = "finished" if result["finished"] else "running" if running else "stopped"
    last = result["history"][-1]["round"] if result["history"] else 0
    total = total_rounds(migrate(result["config"]))
    line = f"{name}  {state}  round {last}/{total}"
    if result.get("test_accuracy") is not None:
        line += f"  test {100 * result['test_accuracy']:.2f} % (best validation at round {result['best_val_round']})"
    if state != "running":
        return line
    return line + time_left(result, total, since_written=now.timestamp() - results_file.stat().st_mtime)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit("usage: queue_status.py JOBS RUNS_DIR")
    jobs_file, runs_dir = Path(argv[0]), Path(argv[1])
    now = datetime.now(UTC)
    for name in queued_names(jobs_file):
        print(job_status(runs_dir, name, now))


if __name__ == "__main__":
    main(sys.argv[1:])
