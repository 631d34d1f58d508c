import pytest

from report_runs import classification_run, regression_run


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A finished classification run directory (its report already written by the run)."""
    return classification_run(tmp_path_factory.mktemp("runs") / "digits")


@pytest.fixture(scope="session")
def sine_run(tmp_path_factory):
    """A finished regression run directory."""
    return regression_run(tmp_path_factory.mktemp("runs") / "sine")
