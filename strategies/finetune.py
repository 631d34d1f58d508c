"""``finetune``: sequential training on each task in turn, nothing to protect old tasks.

The lower bound of a lifelong stream: it learns each task well and forgets earlier ones
(catastrophically under the class-incremental protocol). Under task-incremental, its loss is
restricted to the task's classes, as the protocol's masked head requires.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from scenarios.base import StreamSpec, Task
from strategies.base import Strategy, training_examples
from strategies.training import MinibatchConfig, make_optimizer, train_minibatches


class FinetuneConfig(MinibatchConfig):
    online_steps: int = Field(1, gt=0, description="online loop: gradient steps on each observed batch")


class Finetune(Strategy):
    """Train the one model on each task's training data with minibatch SGD (or Adam).

    Online (``observe``): ``online_steps`` steps on each labelled batch as it arrives.
    """

    name = "finetune"
    Config = FinetuneConfig

    def setup(self, model: torch.nn.Module, spec: StreamSpec, device, seed: int = 0) -> None:
        super().setup(model, spec, device, seed)
        c = self.config
        self.optimizer = make_optimizer(c.optimizer, self.model.parameters(), c.lr, c.momentum)

    def learn(self, task: Task) -> dict[str, Any]:
        loop = self.task_loop()
        x, y, mask = training_examples(self, task)
        c = self.config
        return train_minibatches(self, self.optimizer, x, y, mask, c.epochs, c.batch_size, task.name, loop)

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int | None = None) -> dict[str, Any]:
        """Online SGD: ``online_steps`` steps of the training optimiser on the observed batch."""
        self.model.train()
        for _ in range(self.config.online_steps):
            loss = self.loss(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return {"loss": loss.detach()}
