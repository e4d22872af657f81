"""Issue 10's structural done-when: the core imports no torch, no import cycles, the library never imports
the CLI; and the CLI hands plain values to the library (resolve_chain; the Namespace is not mutated)."""

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pifskit
from pifskit._validate import PifsError
from pifskit.chains import Chain, make_chain
from pifskit.resolve import resolve_chain
from pifskit.schedules import get_schedule

SRC = Path(pifskit.__file__).resolve().parent
#: by design torch-side (or the CLI, which imports the torch layer lazily)
TORCH_SIDE = ("pifskit.torch", "pifskit.cli", "pifskit.__main__")


def _module_name(path: Path) -> str:
    parts = ("pifskit",) + path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}
CORE = [m for m in MODULES if not m.startswith(TORCH_SIDE)]


def _imports(name: str, path: Path, *, module_level: bool) -> set[str]:
    """pifskit modules that ``name`` imports: at module level (statements outside functions, including
    those under ``if`` / ``try``), or all (``module_level=False``: function-local imports too).
    ``from pkg import x`` counts as importing ``pkg.x`` when that is a module, else ``pkg``."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)) and not (module_level and in_function):
                if isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                else:
                    base = package
                    for _ in range(child.level - 1):
                        base = base.rpartition(".")[0]
                    mod = (f"{base}.{child.module}" if child.module else base) if child.level else child.module
                    targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in child.names]
                found.update(t for t in targets if t in MODULES and t != name)
            visit(child, inner)

    visit(tree, False)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph (as a path that returns to its start), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state and (c := dfs(v)):
                return c
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state and (c := dfs(u)):
            return c
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_import_graph_is_read():
    """The graph sees real edges (so an empty graph cannot pass the cycle test)."""
    g = {m: _imports(m, p, module_level=True) for m, p in MODULES.items()}
    assert "pifskit.schedules" in g["pifskit.chains"]
    assert "pifskit.scheduler_config" in g["pifskit.resolve"]
    assert "pifskit.datasets" in _imports("pifskit.spectra", MODULES["pifskit.spectra"], module_level=False)
    assert "pifskit.exact_models.gaussian" in g["pifskit.exact_models"]
    assert sum(map(len, g.values())) > 100


def test_no_import_cycles_among_module_level_imports():
    """Module-level imports form a DAG. Function-local imports are left out: they run when the function is
    called, after every module has finished importing, so they cannot meet a half-initialised module
    (they are how optional layers are reached lazily, e.g. spectra.digits -> datasets)."""
    graph = {m: _imports(m, p, module_level=True) for m, p in MODULES.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_no_import_cycles_counting_function_local_imports():
    """Stronger: even with the lazy, function-local imports counted, the import graph is a DAG
    (design.baselines once reached back into design.steps from inside a function)."""
    graph = {m: _imports(m, p, module_level=False) for m, p in MODULES.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_library_never_imports_the_cli():
    offenders = {m: sorted(i for i in _imports(m, p, module_level=False) if i.startswith("pifskit.cli"))
                 for m, p in MODULES.items() if not m.startswith(("pifskit.cli", "pifskit.__main__"))}
    assert {m: v for m, v in offenders.items() if v} == {}


def test_core_modules_import_no_torch():
    """Importing every core module (all but pifskit.torch, pifskit.cli) in a fresh interpreter leaves torch
    (and matplotlib.pyplot) out of sys.modules."""
    assert len(CORE) > 30 and "pifskit.exact_bench" in CORE and "pifskit.report.model" in CORE
    code = ("import importlib, json, sys\n"
            f"for m in {CORE!r}: importlib.import_module(m)\n"
            "print(json.dumps([m for m in ('torch', 'matplotlib.pyplot') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_torch_check_detects_torch():
    """The same subprocess check does see torch when a torch-side module is imported."""
    pytest.importorskip("torch")
    code = "import sys, pifskit.torch.adapter; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


# -- resolve_chain: the one chain resolution, from plain values -----------------------------------

def test_resolve_chain_agrees_with_the_constructors():
    sd = get_schedule("sd")
    np.testing.assert_array_equal(resolve_chain("sd", 10).logsnr, make_chain(sd, 10, "trailing").logsnr)
    np.testing.assert_array_equal(resolve_chain(sd, 7, "karras").logsnr, make_chain(sd, 7, "karras").logsnr)
    ts = [999, 600, 250, 10]
    c = resolve_chain(sd, 50, timesteps=ts)
    np.testing.assert_array_equal(c.timesteps, ts)
    np.testing.assert_array_equal(c.logsnr, Chain.from_timesteps(sd, ts).logsnr)
    sig = [14.6, 3.0, 0.5, 0.0]
    np.testing.assert_allclose(resolve_chain(sd, 50, sigmas=sig).sigmas, sig)
    with pytest.raises(PifsError, match="not both"):
        resolve_chain(sd, 5, timesteps=ts, sigmas=sig)
    with pytest.raises(PifsError, match="discrete"):
        resolve_chain("cosine", 5, timesteps=ts)


def test_resolve_chain_from_a_config_is_diffusers_rule():
    """A DDIMScheduler config with leading spacing, offset 1 and set_alpha_to_one false: diffusers'
    timesteps (1000 // 5 = 200 apart, + 1) and the final level alpha_bar[0]."""
    cfg = {"_class_name": "DDIMScheduler", "timestep_spacing": "leading", "steps_offset": 1,
           "set_alpha_to_one": False}
    c = resolve_chain(None, 5, config=cfg)
    np.testing.assert_array_equal(c.timesteps, [801, 601, 401, 201, 1])
    assert c.logsnr[-1] == pytest.approx(get_schedule("ddpm").logsnr_table[0])
    # the config's final level also applies to explicit timesteps
    assert resolve_chain(None, 5, timesteps=[900, 500], config=cfg).logsnr[-1] == c.logsnr[-1]
    # a pifskit spacing overrides the config's rule on the config's schedule
    np.testing.assert_array_equal(resolve_chain(None, 6, "logsnr", config=cfg).logsnr,
                                  make_chain(get_schedule("ddpm"), 6, "logsnr").logsnr)


def test_chain_from_args_leaves_the_namespace_alone():
    from pifskit.cli._common import chain_from_args

    args = argparse.Namespace(schedule=None, diffusers_config=None, steps=4, spacing=None, timesteps=None,
                              sigmas=None)
    before = dict(vars(args))
    sched, chain = chain_from_args(args, schedule="ddpm")
    assert vars(args) == before
    np.testing.assert_array_equal(chain.logsnr, make_chain(get_schedule("ddpm"), 4).logsnr)
