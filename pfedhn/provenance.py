"""What produced a run: the package's code, the libraries, the threads and the start time.

``results.json`` keeps one record per process that worked on the run (a run
resumed in a later session, perhaps after a pin move, has two), so numbers from
before and after a version change can be told apart.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("flwr", "torch", "torchvision")
CHECKOUT = Path(__file__).resolve().parent.parent


def git_state(checkout: Path = CHECKOUT) -> tuple[str | None, bool | None]:
    """(HEAD commit, whether tracked files differ from it) of ``checkout``; (None, None) outside git."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(checkout), *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, dirty


def record(from_round: int) -> dict[str, Any]:
    """The provenance of the process that runs rounds ``from_round + 1`` onwards.

    Keys: ``from_round``, ``started`` (UTC, ISO 8601), ``commit`` and ``dirty``
    (None when the package is not run from a git checkout), ``pfedhn``,
    ``python``, one key per library in ``LIBRARIES`` (installed versions),
    ``torch_threads`` (torch's intra-op threads in this process) and ``cpus``.
    """
    import torch  # here, so that reading records (the summarizer) does not load torch

    commit, dirty = git_state()
    return {
        "from_round": from_round,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "dirty": dirty,
        "pfedhn": metadata.version("pfedhn"),
        "python": platform.python_version(),
        **{name: metadata.version(name) for name in LIBRARIES},
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
    }


def versions_label(records: list[dict[str, Any]]) -> str:
    """``flwr 1.42.0, torch 2.15.0, torchvision 0.29.2``: the libraries behind ``records``
    (several versions of one library are joined with ``+``; ``unrecorded`` when none)."""
    if not records:
        return "unrecorded"
    parts = []
    for name in LIBRARIES:
        seen = list(dict.fromkeys(r.get(name, "?") for r in records))
        parts.append(f"{name} {'+'.join(seen)}")
    return ", ".join(parts)
