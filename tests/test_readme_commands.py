"""README.md's first two commands and CI: a CPU-only machine gets torch's CPU build before netspec's own
install (which would otherwise pull PyPI's CUDA build), and CI runs README's test command."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [line for line in block.splitlines() if line.startswith("python3 -m venv")]


def test_cpu_build_of_torch_comes_first():
    demo, _gpu, tests = _commands()
    for cmd in (demo, tests):
        steps = cmd.split(" && ")
        torch_at = next(i for i, s in enumerate(steps) if s.startswith("pip install torch"))
        netspec_at = next(i for i, s in enumerate(steps) if s.startswith("pip install -e"))
        assert torch_at < netspec_at and "/whl/cpu" in steps[torch_at], cmd


def test_ci_runs_readmes_test_command():
    pytest_cmd = _commands()[2].split(" && ")[-1]
    ci = (ROOT / ".ci" / "run").read_text()
    install = _commands()[2].split(" && ")[-2]
    assert re.search(rf"^python -m {re.escape(install)}", ci.replace("--quiet ", ""), re.M), install
    assert re.search(rf"^{re.escape(pytest_cmd)}( |$)", ci, re.M), pytest_cmd
    assert "pip install --quiet torch==" in ci       # CI's stand-in for the CPU index (PyPI only there)
