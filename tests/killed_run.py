"""``python -m tests.killed_run <point> <hydra overrides...>``: ``pfedhn.main`` that kills
itself with SIGKILL (no clean-up of any kind) at ``point``, for the crash-safety tests.

Points: ``checkpoint:N`` halfway through writing the N-th checkpoint of this process
(half of its bytes on disk), ``fit:R`` at the start of local training in round R.
"""

from __future__ import annotations

import io
import os
import runpy
import signal
import sys

import torch

from pfedhn.client_app import PersonalizedClient


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_in_checkpoint_write(nth: int) -> None:
    real_save, calls = torch.save, [0]

    def save(payload, file, *args, **kwargs):
        calls[0] += 1
        if calls[0] < nth:
            return real_save(payload, file, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(payload, buffer, *args, **kwargs)
        file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        file.flush()
        die()

    torch.save = save


def kill_in_fit(server_round: int) -> None:
    real_fit = PersonalizedClient.fit

    def fit(self, parameters, config):
        if int(config["server_round"]) == server_round:
            die()
        return real_fit(self, parameters, config)

    PersonalizedClient.fit = fit


if __name__ == "__main__":
    point, value = sys.argv[1].split(":")
    {"checkpoint": kill_in_checkpoint_write, "fit": kill_in_fit}[point](int(value))
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    runpy.run_module("pfedhn.main", run_name="__main__")  # as `python -m pfedhn.main` (Hydra finds conf/)
