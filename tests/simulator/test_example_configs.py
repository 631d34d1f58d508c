"""Every experiment file shipped in configs/ passes validation (the checks `lifelong run` makes
before anything runs), so that an example cannot rot unnoticed."""

from pathlib import Path

import pytest

from simulator.config import load_experiment

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.toml"))


def test_there_are_example_files():
    assert {p.name for p in CONFIGS} >= {"quickstart.toml", "rotated_mnist_question.toml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_an_example_file_is_a_valid_experiment(path):
    experiment = load_experiment(path)
    assert experiment.strategies and experiment.seeds
