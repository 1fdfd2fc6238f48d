"""Saved configs (``results.json``, checkpoints) in today's key layout.

Keys a method reads under ``method.`` that older configs held at the top level (its
``MethodSpec.moved_keys``, e.g. pFedHN's ``hypernetwork``, ``model.sizes`` and ``novel``)
are moved there; the same keys in another method's config, which it never read, are dropped;
so are keys the package no longer has (``REMOVED_KEYS``). Keys added since (``ADDED_KEYS``) get
the value that does what the package did before them.
"""

from __future__ import annotations

import copy
from typing import Any

from pfedhn.methods import METHODS, spec_of

REMOVED_KEYS = ("simulation.worker_niceness",)  # the worker processes' nice level: it changed no number
# dataset.split came with the official trainers' splits (commit 7da2758); before, every run drew
# the pfedhn split, unchanged by that commit (same data fingerprint)
ADDED_KEYS: dict[str, Any] = {"dataset.split": "pfedhn"}


def migrate(saved: dict[str, Any]) -> dict[str, Any]:
    """A copy of the saved config ``saved`` with every moved key where its method reads it now
    and every added key set as before it existed."""
    cfg = copy.deepcopy(saved)
    own = spec_of(cfg).moved_keys
    for key in dict.fromkeys([*REMOVED_KEYS, *(k for spec in METHODS.values() for k in spec.moved_keys)]):
        holder, leaf = _holder(cfg, key, create=False)
        if leaf not in holder:
            continue
        value = holder.pop(leaf)
        if key in own:
            cfg["method"].setdefault(leaf, value)
    for key, value in ADDED_KEYS.items():
        holder, leaf = _holder(cfg, key, create=True)
        holder.setdefault(leaf, value)
    return cfg


def _holder(cfg: dict[str, Any], key: str, create: bool) -> tuple[dict[str, Any], str]:
    """The dict of ``cfg`` that holds the dotted ``key`` and the key's last part; a missing
    parent is added to ``cfg`` if ``create``, else stands as a new empty dict."""
    *parents, leaf = key.split(".")
    for part in parents:
        cfg = cfg.setdefault(part, {}) if create else cfg.get(part, {})
    return cfg, leaf
