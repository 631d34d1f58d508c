"""`lifelong export`: run directories and sweep directories as CSV (one column per grid key);
`lifelong sweep --data-root`."""

import json

from experiments import experiment_toml, write_experiment  # tests/simulator/experiments.py

from simulator import cli
from simulator.store import ResultsDB
from simulator.sweep import load_sweep


def test_a_run_directory_exports_its_scalar_metrics(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    runs = [{"strategy": "finetune", "seed": 0, "metrics": {
                "k0": {"final_accuracy": 0.5, "forgetting": None, "adaptation_auc": [[0.1, 0.2]]},
                "k10": {"final_accuracy": 0.75, "forgetting": 0.125, "adaptation_auc": [[0.3, 0.4]]},
                "k2": {"final_accuracy": 0.625, "forgetting": 0.0, "adaptation_auc": [[0.3, 0.4]]}}},
            {"strategy": "my_methods:L2Anchor", "seed": 3, "metrics": {"k0": {"final_accuracy": 0.25}}}]
    (run_dir / "results.json").write_text(json.dumps({"runs": runs}))
    assert cli.main(["export", str(run_dir)]) == 0
    assert capsys.readouterr().out == f"exported 7 metric rows to {run_dir / 'metrics.csv'}\n"
    # k in numeric order (k2 before k10), NaN (null) as an empty cell, per-cell arrays left out.
    assert (run_dir / "metrics.csv").read_text().splitlines() == [
        "strategy,seed,k,metric,value",
        "finetune,0,0,final_accuracy,0.5", "finetune,0,0,forgetting,",
        "finetune,0,2,final_accuracy,0.625", "finetune,0,2,forgetting,0.0",
        "finetune,0,10,final_accuracy,0.75", "finetune,0,10,forgetting,0.125",
        "my_methods:L2Anchor,3,0,final_accuracy,0.25"]


def test_a_run_directory_written_by_a_run_exports(digits_run, tmp_path):
    out = tmp_path / "m.csv"
    assert cli.main(["export", str(digits_run), "--out", str(out)]) == 0
    header, *rows = out.read_text().splitlines()
    results = json.loads((digits_run / "results.json").read_text())
    expected = {(r["strategy"], str(r["seed"]), k.removeprefix("k"), name)
                for r in results["runs"] for k, at in r["metrics"].items() for name, v in at.items()
                if not isinstance(v, list)}
    assert header == "strategy,seed,k,metric,value"
    assert {tuple(row.split(",")[:4]) for row in rows} == expected and len(rows) == len(expected)


def test_a_sweep_directory_exports_one_column_per_grid_key(tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    db = ResultsDB(out / "results.db")
    trials = [("t1", {"strategies.finetune.lr": 0.1, "model.hidden": [16, 16]}, "finetune", 0.5),
              ("t2", {"strategies.finetune.lr": 0.01, "model.hidden": [16, 16]}, "finetune", float("nan")),
              ("t3", {"model.hidden": [16, 16], "strategies.maml.optimizer": "adam"}, "maml", 0.25)]
    for trial_id, point, strategy, value in trials:
        db.mark(trial_id, config_hash="h", point=point, strategy=strategy, seed=1, status="running")
        db.finish(trial_id, status="done", error=None, seconds=1.0, versions={},
                  metrics={0: {"final_accuracy": value}, 5: {"final_accuracy": 0.875}})
    db.close()
    assert cli.main(["export", str(out)]) == 0
    assert (out / "metrics.csv").read_text().splitlines() == [
        "trial_id,strategy,seed,model.hidden,strategies.finetune.lr,strategies.maml.optimizer,k,metric,value",
        't2,finetune,1,"[16, 16]",0.01,,0,final_accuracy,',
        't2,finetune,1,"[16, 16]",0.01,,5,final_accuracy,0.875',
        't1,finetune,1,"[16, 16]",0.1,,0,final_accuracy,0.5',
        't1,finetune,1,"[16, 16]",0.1,,5,final_accuracy,0.875',
        't3,maml,1,"[16, 16]",,adam,0,final_accuracy,0.25',
        't3,maml,1,"[16, 16]",,adam,5,final_accuracy,0.875']


def test_export_refuses_what_is_neither_a_run_nor_a_sweep_directory(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"lifelong: error: {tmp_path} is not a run directory (written by `lifelong run`, holding results.json) or "
        f"a sweep directory (written by `lifelong sweep`, holding results.db): neither results.db nor "
        f"results.json is there\n")
    (tmp_path / "results.json").write_text('{"runs": [{"strategy": "finetune"}]}')
    assert cli.main(["export", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lifelong: error: {tmp_path / 'results.json'} is damaged or not the results.json of a "
                          f"run directory (KeyError: 'seed')") and not (tmp_path / "metrics.csv").exists()


SWEEP = experiment_toml("mnist-grid", seeds=None, scenario={"name": "split-mnist", "num_tasks": 2}, model=None,
                        evaluation={"episodes": 2, "adapt_steps": 0}, sweep={"strategies.finetune.lr": [0.1]})


def test_sweep_data_root_reaches_every_trial(tmp_path, capsys):
    path = write_experiment(tmp_path, SWEEP, "grid.toml")
    empty = tmp_path / "no-data-here"
    empty.mkdir()
    (trial,) = load_sweep(path, data_root=str(empty)).trials
    assert trial.config["scenario"]["data_root"] == str(empty.resolve())
    # From the command line: the trial looks for MNIST there, and says so.
    assert cli.main(["sweep", str(path), "--data-root", str(empty), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"trial {trial.id} failed: " in err and str(empty / "mnist") in err
