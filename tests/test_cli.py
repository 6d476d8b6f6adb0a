"""The `suti` command line: help, version, and the README/CI contract."""

import subprocess
import sys
from pathlib import Path

from suti import __version__
from tools.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"suti {__version__}"


def test_help_lists_only_real_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    names = ("world", "index", "generate", "demo", "train", "experts", "eval", "serve", "client")
    for name in names:
        assert name in out, name
        # every listed command answers --help itself
        assert main([name, "--help"]) == 0, name
    for sub in (["eval", "auto"], ["eval", "train-graders"], ["eval", "human"], ["train", "apprentice"],
                ["experts", "run"], ["client", "subjects"]):
        assert main([*sub, "--help"]) == 0, sub


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_console_script_runs_out_of_process():
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert __version__ in proc.stdout


def _readme_block(marker: str) -> str:
    """The fenced block right after `<!-- command:NAME -->`, as .ci/run reads it."""
    awk = (
        f"/<!-- command:{marker} -->/{{f=1; next}} f && /^```/{{if (inblock) exit; inblock=1; next}} "
        "f && inblock{print}"
    )
    return subprocess.run(["awk", awk, str(ROOT / "README.md")], capture_output=True, text=True, check=True).stdout.strip()


def test_ci_runs_the_readme_test_command():
    test_cmd = _readme_block("test")
    main_cmd = _readme_block("main")
    assert test_cmd.count("\n") == 0 and "pytest" in test_cmd and "pip install" in test_cmd
    assert main_cmd.count("\n") == 0 and "pip install" in main_cmd
    ci = (ROOT / ".ci" / "run").read_text()
    assert "command:test" in ci  # the CI script extracts that very block
