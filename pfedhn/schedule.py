"""When things happen in a run: who may be sampled in a round, and which rounds are evaluated.

The driver (``pfedhn.strategy``) samples and evaluates by it; a method with a
novel-client phase (pFedHN, paper Sec. 5.3) asks it which phase a round is in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """A run of ``num_rounds`` rounds over ``num_clients`` clients.

    With ``novel_clients`` > 0, the last ``novel_clients`` partitions take no part in
    rounds 1..``num_rounds - novel_rounds`` (the seen phase); in the last ``novel_rounds``
    rounds only they are sampled (the novel phase).

    Parameters
    ----------
    num_clients : int
    num_rounds : int
        All rounds of the run, the novel phase's included.
    eval_every : int
        Evaluate all clients after rounds 1, 1 + eval_every, ... and after the last round of each phase.
    novel_clients : int (default: 0)
    novel_rounds : int (default: 0)
    """

    num_clients: int
    num_rounds: int
    eval_every: int
    novel_clients: int = 0
    novel_rounds: int = 0

    @property
    def novel_from(self) -> int:
        """The first round of the novel phase (``num_rounds + 1`` without one)."""
        return self.num_rounds - self.novel_rounds + 1 if self.novel_clients else self.num_rounds + 1

    @property
    def seen(self) -> list[int]:
        return list(range(self.num_clients - self.novel_clients))

    @property
    def novel(self) -> list[int]:
        return list(range(self.num_clients - self.novel_clients, self.num_clients))

    def is_novel_round(self, server_round: int) -> bool:
        return server_round >= self.novel_from

    def pool(self, server_round: int) -> list[int]:
        """The clients that may be sampled in ``server_round``."""
        return self.novel if self.is_novel_round(server_round) else self.seen

    def is_eval_round(self, server_round: int) -> bool:
        """The official schedule: after updates 1, 1 + k, 1 + 2k, ... and after the last round of
        each phase."""
        return is_eval_round(server_round, self.eval_every, (self.novel_from - 1, self.num_rounds))


def is_eval_round(server_round: int, eval_every: int, last_rounds: tuple[int, ...]) -> bool:
    """After updates 1, 1 + k, 1 + 2k, ... and after each of ``last_rounds``."""
    return (server_round - 1) % eval_every == 0 or server_round in last_rounds
