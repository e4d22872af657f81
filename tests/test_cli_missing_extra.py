"""Issue 9 item 4: a missing optional extra gives one line naming it, exit 2, no traceback."""

import subprocess
import sys
import textwrap

import pytest


@pytest.mark.parametrize("blocked,argv,extra", [
    ("torch", ["sample", "--checkpoint", "nonexistent-ckpt", "--out", "o"], "pifskit[torch]"),
    ("sklearn", ["lyapunov", "--spectrum", "digits"], "pifskit[data]"),
])
def test_missing_extra_one_line(tmp_path, blocked, argv, extra):
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys
        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name == {blocked!r} or name.startswith({blocked!r} + "."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None
        sys.meta_path.insert(0, _Block())
    """))
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "pifskit", *argv], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert extra in lines[0]
