"""Small helpers shared by the server and client sides."""

from __future__ import annotations

from typing import Any

import numpy as np


def derive_seed(*keys: int) -> int:
    """A 63-bit seed determined by ``keys`` alone (e.g. run seed, client, round).

    Derived seeds make a client's randomness independent of which process or
    in which order Flower runs it.
    """
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict's leaves by dotted key (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``); empty dicts vanish."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}
