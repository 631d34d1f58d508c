"""The reservoir replay buffer: algorithm R exactly, uniform in distribution, resumable."""

import numpy as np
import pytest
import torch

from strategies.replay import ReservoirBuffer


def sequential_reservoir(capacity, xs, draws):
    """Algorithm R one example at a time, with the uniforms ``draws`` of the examples past the
    fill phase, in order: the reference the vectorised buffer must equal."""
    slots, seen, u = [], 0, iter(draws)
    for x in xs:
        seen += 1
        if len(slots) < capacity:
            slots.append(x)
            continue
        j = int(next(u) * seen)
        if j < capacity:
            slots[j] = x
    return slots


@pytest.mark.parametrize("capacity,batches", [(5, [3, 4, 10, 1, 7]), (1, [4, 4]), (8, [2, 50, 50])])
def test_batches_give_the_one_at_a_time_algorithm(capacity, batches):
    gen = torch.Generator().manual_seed(3)
    buffer = ReservoirBuffer(capacity, gen)
    replay = torch.Generator().manual_seed(3)
    values, draws, start = list(range(sum(batches))), [], 0
    for size in batches:
        x = torch.arange(start, start + size, dtype=torch.float64)
        past_fill = max(0, size - max(0, capacity - min(start, capacity)))
        if past_fill:
            draws += torch.rand(past_fill, generator=replay, dtype=torch.float64).tolist()
        buffer.add(x.unsqueeze(1), x.long())
        start += size
    expected = sequential_reservoir(capacity, values, draws)
    assert buffer.y[:len(buffer)].tolist() == expected and buffer.seen == sum(batches)


def test_every_example_is_kept_with_equal_probability():
    kept = np.zeros(40)
    for seed in range(2000):
        buffer = ReservoirBuffer(10, torch.Generator().manual_seed(seed))
        for start in range(0, 40, 7):
            x = torch.arange(start, min(start + 7, 40))
            buffer.add(x.float().unsqueeze(1), x)
        kept[buffer.y.numpy()] += 1
    share = kept / 2000   # each of the 40 examples should be kept with probability 10/40
    sigma = np.sqrt(0.25 * 0.75 / 2000)
    assert np.all(np.abs(share - 0.25) < 5 * sigma), share


def test_state_dict_resumes_bit_identical():
    x = torch.randn(60, 3, generator=torch.Generator().manual_seed(0))
    y = torch.arange(60)
    whole = ReservoirBuffer(8, torch.Generator().manual_seed(1))
    for start in range(0, 60, 6):
        whole.add(x[start:start + 6], y[start:start + 6])
    first = ReservoirBuffer(8, torch.Generator().manual_seed(1))
    for start in range(0, 30, 6):
        first.add(x[start:start + 6], y[start:start + 6])
    resumed = ReservoirBuffer(8, torch.Generator())
    resumed.load_state_dict(first.state_dict())
    for start in range(30, 60, 6):
        resumed.add(x[start:start + 6], y[start:start + 6])
    assert torch.equal(resumed.x, whole.x) and torch.equal(resumed.y, whole.y)
    assert torch.equal(resumed.sample(5)[1], whole.sample(5)[1])


def test_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="capacity > 0"):
        ReservoirBuffer(0, torch.Generator())
    with pytest.raises(ValueError, match="empty"):
        ReservoirBuffer(2, torch.Generator()).sample(1)
    buffer = ReservoirBuffer(2, torch.Generator())
    with pytest.raises(ValueError, match="capacity 3, this one 2"):
        buffer.load_state_dict({**ReservoirBuffer(3, torch.Generator()).state_dict()})
