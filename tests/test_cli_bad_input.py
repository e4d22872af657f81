"""Issue 9's bad inputs across the commands: exit 2, one stderr line, no traceback, no output changed.

Every case names the problem in one line; outputs that already exist (a file where a report folder is
asked for, a previous run's files) are left exactly as they were.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pifskit.cli import main
from test_cli_geometry import run_cli


def tree_digest(root: Path) -> dict[str, str]:
    """path -> sha256 of every file under ``root`` (or of ``root`` itself)."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def assert_one_line_exit_2(code: int, out: str, err: str) -> str:
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pifskit")
    return lines[0]


@pytest.fixture
def spectrum_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    comments = tmp_path / "comments.txt"
    comments.write_text("# nothing but a comment\n")
    return {"empty": empty, "comments": comments, "folder": tmp_path}


CASES = {
    # issue 9 item 7: one spacing rule; 'leading' has no continuous counterpart
    "leading on a continuous schedule": (["geometry", "--schedule", "cosine", "--spacing", "leading"], "leading"),
    # issue 9 item 12: AYS-SVD's levels are outside SD's range
    "ays-svd on sd": (["geometry", "--schedule", "sd", "--spacing", "ays-svd"], "outside this schedule's noise"),
    # issue 9 item 6: prediction names, one vocabulary
    "unknown prediction": (["design", "weighting", "--prediction", "noise"], "prediction type"),
    "unknown schedule": (["geometry", "--schedule", "scaled-cosine"], "unknown schedule"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_core_input(name, capsys):
    argv, needle = CASES[name]
    line = assert_one_line_exit_2(*run_cli(argv, capsys))
    assert needle in line


@pytest.mark.parametrize("kind", ["empty", "comments", "folder"])
def test_bad_spectrum_files_say_what_is_wrong(kind, spectrum_files, capsys, recwarn):
    line = assert_one_line_exit_2(*run_cli(["lyapunov", "--spectrum", f"file:{spectrum_files[kind]}"], capsys))
    assert str(spectrum_files[kind].name) in line or "spectrum" in line
    assert not [w for w in recwarn if "numpy" in str(w.filename) or "empty" in str(w.message).lower()]


@pytest.mark.parametrize("content, needle", [("", "is empty"), ("{not json", "malformed JSON"),
                                             ('{"beta_end": "0.012"}', "'beta_end' must be a number")])
def test_bad_configs(tmp_path, capsys, content, needle):
    p = tmp_path / "scheduler_config.json"
    p.write_text(content)
    line = assert_one_line_exit_2(*run_cli(["geometry", "--diffusers-config", str(p)], capsys))
    assert needle in line
    line = assert_one_line_exit_2(*run_cli(["geometry", "--diffusers-config", str(tmp_path / "nothing")], capsys))
    assert "not found" in line


def test_config_folder_without_config(tmp_path, capsys):
    line = assert_one_line_exit_2(*run_cli(["geometry", "--diffusers-config", str(tmp_path)], capsys))
    assert "folder without scheduler_config.json" in line


@pytest.mark.parametrize("argv", [
    ["report"],
    ["bench", "sampling", "--data", "gaussian:powerlaw:2:4", "--steps", "2", "--samples", "50"],
    ["analyze-model", "--model", "pifskit.torch.testing:tiny_dit", "--steps", "2"],
    ["train", "--data", "digits", "--steps", "2"],
], ids=lambda a: " ".join(a[:2]))
def test_out_is_an_existing_file_changes_nothing(argv, tmp_path, capsys):
    target = tmp_path / "out.txt"
    target.write_text("a previous result\n")
    before = tree_digest(tmp_path)
    assert_one_line_exit_2(*run_cli([*argv, "--out", str(target)], capsys))
    assert tree_digest(tmp_path) == before


def test_sample_from_a_corrupt_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"\x80\x02 not a torch file")
    out = tmp_path / "samples"
    line = assert_one_line_exit_2(*run_cli(["sample", "--checkpoint", str(run), "--out", str(out)], capsys))
    assert "corrupt" in line and line.rstrip().endswith(("file", ")", "."))  # a whole sentence, not cut
    assert not out.exists()


def test_factory_that_is_not_a_model(tmp_path, capsys):
    line = assert_one_line_exit_2(*run_cli(["analyze-model", "--model", "os:getcwd", "--out",
                                            str(tmp_path / "a")], capsys))
    assert "must return a model" in line


def test_train_resume_into_a_run_changes_nothing(tmp_path, capsys):
    """A new run into a folder that already holds a checkpoint is refused before any work."""
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--steps", "1", "--out", str(run), "--model", "dit", "--width", "16",
                 "--depth", "1", "--heads", "2", "--batch-size", "8", "--json"]) == 0
    capsys.readouterr()
    before = tree_digest(run)
    assert_one_line_exit_2(*run_cli(["train", "--data", "digits", "--steps", "2", "--out", str(run)], capsys))
    assert tree_digest(run) == before
    json.loads((run / "log.jsonl").read_text().splitlines()[0])
