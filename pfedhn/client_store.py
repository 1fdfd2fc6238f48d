"""What a client keeps between rounds: one store of named tensors in ``Context.state``.

The only code that reads or writes it. What goes in is declared by the method's
``pfedhn.protocol.Keeping``: the parameters each instruction names (``ClientModel.keep``),
their momentum if they train with an optimizer of their own, and the objective's state
(a personalized model, evaluated instead of the sent one). The store's order is
``get_parameters``' order (the server's checkpoints).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from flwr.app import ArrayRecord, RecordDict
from omegaconf import DictConfig

from pfedhn.protocol import Keeping

STORE = "kept"  # the Context.state record holding what this client keeps
MOMENTUM_PREFIX = "momentum."  # store entries holding a kept parameter's momentum


class ClientStore:
    """One client's store, as ``keeping`` declares it.

    Parameters
    ----------
    state : RecordDict
        ``Context.state``: where the store lives between rounds.
    keeping : Keeping
        What the client's method keeps.
    cfg : DictConfig
        The run's config (``keeping``'s callables take it).
    partition_id : int
        The client's partition (``keeping.initial`` takes it).
    """

    def __init__(self, state: RecordDict, keeping: Keeping, cfg: DictConfig, partition_id: int) -> None:
        self.state, self.keeping, self.cfg, self.partition_id = state, keeping, cfg, partition_id
        self._tensors: dict[str, torch.Tensor] | None = None  # read from ``state`` at first use

    def tensors(self) -> dict[str, torch.Tensor]:
        """Name → tensor of everything the client keeps (empty before its first fit)."""
        if self._tensors is None:
            self._tensors = dict(self.state[STORE].to_torch_state_dict()) if STORE in self.state else {}
        return self._tensors

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Replace the store by ``arrays`` (the server's checkpoint of it, after a resume)."""
        self._write({name: torch.tensor(a) for name, a in arrays.items()})

    def _write(self, tensors: dict[str, torch.Tensor]) -> None:
        self.state[STORE] = ArrayRecord(torch_state_dict=tensors)
        self._tensors = None

    def model_values(
        self, sent: Mapping[str, np.ndarray], keep: Sequence[str], release: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """A value for every parameter the model gets: kept ones from the store (or, the first
        time, ``keeping.initial``), released ones from the store if it has them, the rest as sent.
        A kept parameter that is also sent replaces the stored one."""
        stored = self.tensors()
        values: dict[str, torch.Tensor] = {name: torch.from_numpy(array) for name, array in sent.items()}
        values.update({name: stored[name] for name in release if name in sent and name in stored})
        missing = [name for name in keep if name not in sent and name not in stored]
        if missing and self.keeping.initial is not None:
            stored = {**self.keeping.initial(self.cfg, self.partition_id), **stored}
        for name in keep:
            if name not in sent:
                if name not in stored:
                    raise RuntimeError(f"client {self.partition_id} keeps no {name} and was not sent it")
                values[name] = stored[name]
        return values

    def kept_optimizer(self, named: Mapping[str, torch.nn.Parameter], keep: Sequence[str]) -> torch.optim.SGD | None:
        """The kept parameters' own SGD (``keeping.optimizer``), momentum restored from the store;
        None if they train with the client's SGD (or nothing is kept)."""
        if self.keeping.optimizer is None or not keep:
            return None
        settings = self.keeping.optimizer(self.cfg)
        params = [named[name] for name in keep]
        optimizer = torch.optim.SGD(
            params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
        )
        stored = self.tensors()
        for name, param in zip(keep, params):
            if MOMENTUM_PREFIX + name in stored:
                optimizer.state[param]["momentum_buffer"] = stored[MOMENTUM_PREFIX + name].to(param.device).clone()
        return optimizer

    def save(
        self,
        named: Mapping[str, torch.nn.Parameter],
        keep: Sequence[str],
        kept_optimizer: torch.optim.SGD | None,
        personal: Mapping[str, torch.Tensor],
    ) -> None:
        """The store becomes the kept parameters as trained, the objective's state
        (``personal``, names under ``keeping.personal``) and the kept parameters' momentum;
        whatever of earlier rounds is not kept now is dropped."""
        prefix = self.keeping.personal
        stray = [name for name in personal if prefix is None or not name.startswith(prefix)]
        if stray:
            raise RuntimeError(f"the objective keeps {stray[:3]}, outside its Keeping.personal prefix {prefix!r}")
        store = {name: named[name].detach().cpu().clone() for name in keep}
        store.update({name: tensor.detach().cpu().clone() for name, tensor in personal.items()})
        if kept_optimizer is not None:
            for name in keep:
                buffer = kept_optimizer.state[named[name]].get("momentum_buffer")
                if buffer is not None:
                    store[MOMENTUM_PREFIX + name] = buffer.cpu().clone()
        self._write(store)

    def personal_model(self) -> dict[str, torch.Tensor]:
        """The personalized model the client evaluates instead of the sent one (name → tensor,
        the model's names), or {} if its method keeps none or it has none yet."""
        prefix = self.keeping.personal
        if prefix is None:
            return {}
        return {name[len(prefix) :]: t for name, t in self.tensors().items() if name.startswith(prefix)}
