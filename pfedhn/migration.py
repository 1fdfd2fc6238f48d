"""Saved configs (``results.json``, checkpoints) in today's key layout.

Keys a method reads under ``method.`` that older configs held at the top level (its
``MethodSpec.moved_keys``, e.g. pFedHN's ``hypernetwork``, ``model.sizes`` and ``novel``)
are moved there; the same keys in another method's config, which it never read, are dropped;
so are keys the package no longer has (``REMOVED_KEYS``).
"""

from __future__ import annotations

import copy
from typing import Any

from pfedhn.methods import METHODS, spec_of

REMOVED_KEYS = ("simulation.worker_niceness",)  # the worker processes' nice level: it changed no number


def migrate(saved: dict[str, Any]) -> dict[str, Any]:
    """A copy of the saved config ``saved`` with every moved key where its method reads it now."""
    cfg = copy.deepcopy(saved)
    own = spec_of(cfg).moved_keys
    for key in dict.fromkeys([*REMOVED_KEYS, *(k for spec in METHODS.values() for k in spec.moved_keys)]):
        *parents, leaf = key.split(".")
        holder = cfg
        for part in parents:
            holder = holder.get(part, {})
        if leaf not in holder:
            continue
        value = holder.pop(leaf)
        if key in own:
            cfg["method"].setdefault(leaf, value)
    return cfg
