"""``finetune``: sequential training on each task in turn, nothing to protect old tasks.

The lower bound of a lifelong stream: it learns each task well and forgets earlier ones
(catastrophically under the class-incremental protocol). Under task-incremental, its loss is
restricted to the task's classes, as the protocol's masked head requires.
"""

from __future__ import annotations

from typing import Any

import torch

from scenarios.base import StreamSpec, Task
from strategies.base import MinibatchConfig, Strategy, make_optimizer, train_minibatches, training_examples


class Finetune(Strategy):
    """Train the one model on each task's training data with minibatch SGD (or Adam)."""

    name = "finetune"
    Config = MinibatchConfig

    def setup(self, model: torch.nn.Module, spec: StreamSpec, device, seed: int = 0) -> None:
        super().setup(model, spec, device, seed)
        c = self.config
        self.optimizer = make_optimizer(c.optimizer, self.model.parameters(), c.lr, c.momentum)

    def learn(self, task: Task) -> dict[str, Any]:
        loop = self.task_loop()
        x, y, mask = training_examples(self, task)
        c = self.config
        return train_minibatches(self, self.optimizer, x, y, mask, c.epochs, c.batch_size, task.name, loop)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
