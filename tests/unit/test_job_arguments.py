"""Bad arguments and bad input to the data-preparation jobs (convert, inspect, generate): a usage
error (exit 2) or one `error:` line naming the file and what is wrong (exit 65 bad data, 78 bad
option), never a traceback; and nothing written. The training jobs stopped by Ctrl-C: one line
too, saying what the same command does next."""

from __future__ import annotations

import sys

import pytest

from pipeline.common.errors import EXIT_BAD_CONFIG, EXIT_BAD_DATA, EXIT_INTERRUPTED


def _run(module: str, argv: list[str], monkeypatch) -> int:
    """The job's exit status for `argv` (sys.argv, as `python -m jobs.<module>` gives it)."""
    import importlib

    job = importlib.import_module(f"jobs.{module}")
    monkeypatch.setattr(sys, "argv", [f"jobs/{module}.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        job.main()
    return exit_info.value.code


def test_convert_names_a_missing_file_a_bad_day_a_bad_line_and_a_bad_option(tmp_path, monkeypatch, capsys):
    csv = tmp_path / "logs.csv"
    csv.write_text("a,b\n1,2\n1\n")
    out = tmp_path / "out"
    base = ["csv", "--out", str(out), "--label", "x=a:1/0"]
    assert _run("convert", [*base, "--csv", str(tmp_path / "none.csv"), "--day", "2026-01-01"], monkeypatch) == 2
    assert f"--csv: no such file: {tmp_path / 'none.csv'}" in capsys.readouterr().err
    assert _run("convert", [*base, "--csv", str(csv), "--day", "2026-13-01"], monkeypatch) == 2
    assert "--day: month must be in 1..12" in capsys.readouterr().err
    assert _run("convert", [*base, "--csv", str(csv), "--day", "2026-01-01"], monkeypatch) == EXIT_BAD_DATA
    assert capsys.readouterr().err == f"error: {csv}: line 3: expected 2 fields, got 1: '1'\n"
    assert _run("convert", [*base, "--csv", str(csv), "--day", "2026-01-01", "--sep", "ab"], monkeypatch) == (
        EXIT_BAD_CONFIG
    )
    assert capsys.readouterr().err.startswith("error: separator 'ab': one character")
    assert not list(out.rglob("*.parquet"))


def test_inspect_names_bad_days_a_missing_label_and_a_bad_option(tmp_path, monkeypatch, capsys):
    from pipeline.data.synthetic import write_file

    write_file(str(tmp_path / "data" / "dt=2026-01-01" / "part-00000.parquet"), 500, seed=0, day_index=0, file_index=0)
    base = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "spec.yaml")]
    assert _run("inspect", [*base, "--days", "2026-01-02..2026-01-01", "--labels", "click"], monkeypatch) == 2
    assert "days '2026-01-02..2026-01-01': expected YYYY-MM-DD" in capsys.readouterr().err
    assert _run("inspect", [*base, "--days", "2026-01-01", "--labels", "clik"], monkeypatch) == EXIT_BAD_DATA
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path}/data/dt=2026-01-01/part-00000.parquet: column 'clik': missing label column\n"
    argv = [*base, "--days", "2026-01-01", "--labels", "click", "--buckets", "1"]
    assert _run("inspect", argv, monkeypatch) == EXIT_BAD_CONFIG
    assert capsys.readouterr().err == "error: buckets must be at least 2, got 1\n"
    assert not (tmp_path / "spec.yaml").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rows", "100", "--days", "0"], "argument --days: 0: must be at least 1"),
        (
            ["--rows", "3", "--days", "2", "--files-per-day", "2"],
            "--rows 3: at least one row per file (2 days x 2 files)",
        ),
        (["--rows", "100", "--id-drift", "1.5"], "argument --id-drift: 1.5: must be between 0 and 1"),
        (["--rows", "many"], "argument --rows: 'many' is not an int"),
        (["--rows", "100", "--start-day", "2026-1-1"], "argument --start-day: Invalid isoformat string: '2026-1-1'"),
    ],
)
def test_generate_refuses_settings_it_cannot_write(argv, message, tmp_path, monkeypatch, capsys):
    assert _run("generate", ["--out", str(tmp_path / "out"), *argv], monkeypatch) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_jobs_name_an_output_directory_they_cannot_write(tmp_path, monkeypatch, capsys, repo_root, clean_logging):
    from jobs.score import main as score_main
    from jobs.train import main as train_main

    monkeypatch.chdir(repo_root)
    (tmp_path / "file").write_text("")  # a directory cannot be made below a file
    below_a_file = tmp_path / "file" / "out"
    with pytest.raises(SystemExit) as exit_info:
        train_main([f"output_dir={below_a_file}"])
    assert exit_info.value.code == EXIT_BAD_CONFIG
    logs = below_a_file / "ple-local" / "logs"
    assert capsys.readouterr().err == (
        f"error: cannot write the log file {logs / 'driver.log'} (Not a directory): check the output directory\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        score_main(["--model", "runs/x/export", "--input", str(tmp_path), "--output", str(below_a_file)])
    assert exit_info.value.code == EXIT_BAD_CONFIG
    assert f"error: cannot write the log file {below_a_file / '_logs' / 'driver.log'} (Not a directory)" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("job", "runs", "argv", "then"),
    [
        ("train", "pipeline.train.launch.run_training", [], "the same command resumes from it"),
        (
            "retrain",
            "pipeline.retrain.daily.retrain",
            ["--config", "configs/jobs/retrain_local.yaml"],
            "the registry is unchanged; the next run trains the candidate again",
        ),
        (
            "compare",
            "pipeline.report.compare.run_comparison",
            ["--config", "configs/jobs/compare_local.yaml"],
            "the same command reuses the seeds that had finished and trains the rest",
        ),
    ],
)
def test_jobs_stopped_by_ctrl_c_say_what_the_same_command_does_next(
    job, runs, argv, then, tmp_path, monkeypatch, capsys, repo_root, clean_logging
):
    """Ctrl-C aborts Ray Train's run (pipeline/train/launch.py raises RunStopped, naming the run's
    latest checkpoint): each training job ends with that and what happens next, one line, exit 1."""
    import importlib

    from pipeline.train.launch import RunStopped

    module, name = runs.rsplit(".", 1)
    run, checkpoint = f"{tmp_path}/runs/x", f"{tmp_path}/runs/x/step_00000040"

    def stopped(*args, **kwargs):
        raise RunStopped(run, checkpoint)

    monkeypatch.setattr(importlib.import_module(module), name, stopped)
    monkeypatch.chdir(repo_root)
    out = ["--out", str(tmp_path / "report")] if job == "compare" else []
    assert _run(job, [*argv, *out, f"output_dir={tmp_path}/runs"], monkeypatch) == 1
    assert capsys.readouterr().err == (
        f"error: training run {run} stopped before it finished (interrupted, or its Ray cluster went away); "
        f"its latest checkpoint is {checkpoint}: {then}\n"
    )


def test_a_run_stopped_before_its_first_checkpoint_is_started_again(
    tmp_path, monkeypatch, capsys, repo_root, clean_logging
):
    from pipeline.train.launch import RunStopped

    def stopped(*args, **kwargs):
        raise RunStopped(f"{tmp_path}/runs/x", None)

    monkeypatch.setattr("pipeline.train.launch.run_training", stopped)
    monkeypatch.chdir(repo_root)
    assert _run("train", [f"output_dir={tmp_path}/runs"], monkeypatch) == 1
    assert capsys.readouterr().err.endswith("it had not saved a checkpoint yet: the same command starts it again\n")


@pytest.mark.parametrize(
    ("job", "runs", "then"),
    [
        ("score", "pipeline.score.run.score", "the files scored so far are listed in {out}/_manifest.json; "),
        ("train", "pipeline.train.launch.run_training", "the same command starts the run, or resumes it from"),
    ],
)
def test_ctrl_c_outside_a_training_run_exits_130_saying_what_a_rerun_does(
    job, runs, then, tmp_path, monkeypatch, capsys, repo_root, clean_logging
):
    """KeyboardInterrupt (Ctrl-C while scoring, or while a training job reads its data): one line, exit 130,
    and Ray shut down before it, so that the line is the console's last (not the shutdown's notices)."""
    import importlib

    import ray

    said: list[str] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "shutdown", lambda: said.append(f"shutdown, error said: {capsys.readouterr().err!r}"))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    module, name = runs.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module), name, interrupted)
    monkeypatch.chdir(repo_root)
    out = tmp_path / "out"
    score_args = ["--model", str(tmp_path / "export"), "--input", str(tmp_path), "--output", str(out)]
    argv = score_args if job == "score" else [f"output_dir={out}"]
    assert _run(job, argv, monkeypatch) == EXIT_INTERRUPTED == 130
    err = capsys.readouterr().err
    assert err.startswith(f"error: interrupted: {then.format(out=out)}") and err.count("\n") == 1, err
    assert said == ["shutdown, error said: ''"]
