"""What a run does when clients fail or send bad results (config group ``faults``).

A client *fails* in a round when it raises, when its reply does not come back within
``faults.round_timeout`` (Flower then answers with an error), or when its result
is rejected here: a returned array that is not finite, has another shape or dtype
than the tensor it answers, or an update norm above ``faults.max_update_norm``.
With ``faults.stop_on_failure`` the first failure stops the run (the strict
setting). Otherwise the round goes on with the good results only (none: no
update at all), every failure is logged and recorded in ``results.json``
(``failures``), and ``faults.max_failed_rounds`` rounds in a row with a failure
stop the run with one line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger("pfedhn")


class ClientFailure(RuntimeError):
    """Clients failed in a way the run's ``FaultPolicy`` does not accept: the run stops."""


class RejectedResult(ValueError):
    """A client's result that must not reach the server's state; the message says why."""


@dataclass(frozen=True)
class FaultPolicy:
    """``stop_on_failure``: stop at the first failure; else go on and stop after
    ``max_failed_rounds`` consecutive rounds with a failure (0: never).
    ``max_update_norm``: reject a result whose update's L2 norm exceeds it (None: no bound).
    ``connect_timeout``: seconds to wait, before the first round, for one client per partition."""

    stop_on_failure: bool = False
    max_failed_rounds: int = 5
    max_update_norm: float | None = None
    connect_timeout: float = 600.0


@dataclass(frozen=True)
class Expected:
    """Shape and dtype of one returned array (those of the tensor it answers)."""

    shape: tuple[int, ...]
    dtype: np.dtype


def check_result(arrays: dict[str, np.ndarray], expected: dict[str, Expected], max_norm: float | None) -> None:
    """Raise ``RejectedResult`` unless every array of ``arrays`` (one per ``expected`` name,
    named by the caller in the order the client was sent them) has its expected shape and
    dtype, all are finite and their joint L2 norm is at most ``max_norm``."""
    for name, array in arrays.items():
        want = expected[name]
        if array.shape != want.shape or array.dtype != want.dtype:
            raise RejectedResult(f"{name} is {array.dtype}{list(array.shape)}, expected {want.dtype}{list(want.shape)}")
        if not np.isfinite(array).all():
            raise RejectedResult(f"{name} holds NaN or inf")
    if max_norm is not None:
        norm = float(np.sqrt(sum(float(np.square(a, dtype=np.float64).sum()) for a in arrays.values())))
        if norm > max_norm:
            raise RejectedResult(f"update norm {norm:.4g} exceeds faults.max_update_norm={max_norm:g}")


@dataclass
class FailureLog:
    """Applies a ``FaultPolicy`` round by round and keeps the record that goes to ``results.json``."""

    policy: FaultPolicy
    records: list[dict[str, Any]] = field(default_factory=list)
    streak: int = 0  # rounds in a row, up to the last training round, with a failure

    def round_done(self, server_round: int, stage: str, clients: list[int], reasons: list[str]) -> None:
        """Record the ``clients`` that failed in ``stage`` of ``server_round`` and why (``reasons``,
        as many as known); raise ``ClientFailure`` if the policy says stop. Stages: "fit",
        "evaluate", "state" (a client lost what it keeps; only "fit" counts toward the streak)."""
        if stage == "fit":
            self.streak = self.streak + 1 if clients else 0
        if not clients:
            return
        record = {"round": server_round, "stage": stage, "clients": sorted(clients), "reasons": reasons}
        self.records.append(record)
        detail = "; ".join(reasons) or "no reason given"
        if self.policy.stop_on_failure:
            raise ClientFailure(
                f"round {server_round}: client(s) {sorted(clients)} failed in {stage}: {detail} "
                "(faults.stop_on_failure=true)"
            )
        log.warning("round %d: client(s) %s failed in %s: %s", server_round, sorted(clients), stage, detail)
        cap = self.policy.max_failed_rounds
        if cap and self.streak >= cap:
            raise ClientFailure(
                f"{self.streak} rounds in a row had failed clients (faults.max_failed_rounds={cap}); "
                f"the last, round {server_round}: {detail}"
            )

    def resume(self, done_round: int) -> None:
        """After a resume from round ``done_round``: the streak of failed training rounds ending there."""
        failed = {r["round"] for r in self.records if r["stage"] == "fit"}
        self.streak = 0
        while done_round - self.streak in failed:
            self.streak += 1
