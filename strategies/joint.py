"""``joint``: trains on all data seen so far (cumulative training): the reference upper bound.

On each task it adds the task's training data to a memory of everything seen and trains on
the whole memory for ``epochs`` passes, continuing from the current weights (with ``reset``,
from a fresh initialisation of the same shape). It never sees a future task.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from scenarios.base import StreamSpec, Task
from strategies.base import Strategy, training_examples
from strategies.training import MinibatchConfig, make_optimizer, train_minibatches


class JointConfig(MinibatchConfig):
    reset: bool = Field(False, description="re-initialise the model before training on each new union")


class Joint(Strategy):
    """Cumulative training on the union of all training data seen so far."""

    name = "joint"
    Config = JointConfig

    def setup(self, model: torch.nn.Module, spec: StreamSpec, device, seed: int = 0) -> None:
        super().setup(model, spec, device, seed)
        self.memory: dict[str, list[torch.Tensor]] = {"x": [], "y": [], "mask": []}
        self._new_optimizer()

    def _new_optimizer(self) -> None:
        c = self.config
        self.optimizer = make_optimizer(c.optimizer, self.model.parameters(), c.lr, c.momentum)

    def learn(self, task: Task) -> dict[str, Any]:
        loop = self.task_loop()
        x, y, mask = training_examples(self, task)
        if not loop.resumed:  # a mid-task checkpoint already holds the grown memory and the reset
            self.memory["x"].append(x)
            self.memory["y"].append(y)
            if mask is not None:
                self.memory["mask"].append(mask.expand(len(x), -1))
            if self.config.reset:
                for module in self.model.modules():
                    if hasattr(module, "reset_parameters"):
                        module.reset_parameters()
                self._new_optimizer()
        xs, ys = torch.cat(self.memory["x"]), torch.cat(self.memory["y"])
        masks = torch.cat(self.memory["mask"]) if self.memory["mask"] else None
        c = self.config
        logs = train_minibatches(self, self.optimizer, xs, ys, masks, c.epochs, c.batch_size, task.name, loop)
        return {**logs, "memory_size": len(xs)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "memory": {k: [t.clone() for t in v] for k, v in self.memory.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.memory = {k: [t.to(self.device) for t in v] for k, v in state["memory"].items()}
