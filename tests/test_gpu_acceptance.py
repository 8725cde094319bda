"""benchmarks/gpu_acceptance.py's frame: a step that fails is a FAIL row and the others still run, the
report names the machine and the kind of run, and a dry run refuses nothing but the GPU. The dry run
itself (minutes on a CPU) runs in .ci/run."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_acceptance as ga  # noqa: E402


def test_a_failing_step_is_a_fail_row_and_the_rest_run(monkeypatch, tmp_path):
    def broken(cfg):
        raise RuntimeError("CUDA error: out of memory\nmore")

    monkeypatch.setattr(ga, "STEPS", {"broken": broken, "fine": lambda cfg: [ga.Row("fine", "1", "1", "PASS")]})
    cfg = ga.Config(True, torch.device("cpu"), 1, 1, 1, tmp_path)
    rows = ga.run_steps(cfg)
    assert [(r.step, r.result) for r in rows] == [("broken", "FAIL"), ("fine", "PASS")]
    assert rows[0].measured == "RuntimeError: CUDA error: out of memory"
    text = ga.report(rows, cfg, 12.0)
    assert text.startswith("### gpu_acceptance.py: dry run (tiny sizes, CPU)")
    assert "| broken | RuntimeError: CUDA error: out of memory | runs | FAIL |" in text and "load average" in text


def test_dry_run_figures_on_a_cpu_are_info_but_checks_are_strict(tmp_path):
    dry = ga.Config(True, torch.device("cpu"), 1, 1, 1, tmp_path)
    real = ga.Config(False, torch.device("cpu"), 1, 1, 1, tmp_path)
    assert ga.verdict(False, dry, strict=False) == "INFO" and ga.verdict(False, dry) == "FAIL"
    assert ga.verdict(False, real, strict=False) == "FAIL" and ga.verdict(True, real) == "PASS"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_the_real_run_without_a_gpu_is_refused(capsys):
    assert ga.main([]) == 2
    assert "no CUDA device here; use --dry-run" in capsys.readouterr().err


def test_no_step_begins_after_the_time_limit_and_the_table_is_still_written(monkeypatch, tmp_path):
    clock = iter([0.0, 1.0, 5.0, 500.0, 501.0])

    def slow(cfg):
        return [ga.Row("slow", "done", "runs", "PASS")]

    monkeypatch.setattr(ga.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(ga, "STEPS", {"first": slow, "late": slow})
    rows = ga.run_steps(ga.Config(False, torch.device("cpu"), 1, 1, 1, tmp_path), time_limit=420)
    assert [(r.step, r.result) for r in rows] == [("slow", "PASS"), ("late", "FAIL")]
    assert rows[1].measured == "not run: 500 s had passed (--time-limit 420)"


def test_the_results_file_holds_the_rows_finished_so_far(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# earlier runs\n")
    results = ga.ResultsFile(str(path))
    results.write("| a | 1 |")
    results.write("| a | 1 |\n| b | 2 |")          # after the next step: the table again, longer
    assert path.read_text() == "# earlier runs\n\n| a | 1 |\n| b | 2 |"


def test_a_compiled_row_needing_more_time_than_is_left_says_so(tmp_path):
    cfg = ga.Config(False, torch.device("cpu"), 1, 1, 1, tmp_path, deadline=ga.time.perf_counter() + 30)
    rows = ga.train_steps(cfg, options=("torch_compile",))
    assert [r.result for r in rows] == ["FAIL", "FAIL"]
    assert rows[0].step == "train step alexnet torch_compile b1" and rows[0].measured.startswith("not run: ")
