"""Size of the package: source lines, modules, and functions longer than 60 lines.

Usage: python benchmarks/code_stats.py [src/pifskit] [--list]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def stats(root: Path, limit: int = 60) -> tuple[int, int, list[tuple[str, str, int]]]:
    """Return (lines, modules, [(module, function, length)] for functions over `limit` lines)."""
    lines = modules = 0
    long: list[tuple[str, str, int]] = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        lines += len(text.splitlines())
        modules += 1
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    long.append((str(path.relative_to(root)), node.name, n))
    return lines, modules, long


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    lines, modules, long = stats(Path(args[0] if args else "src/pifskit"))
    print(f"lines {lines}  modules {modules}  functions>60 {len(long)}")
    if "--list" in sys.argv:
        for mod, name, n in sorted(long, key=lambda t: -t[2]):
            print(f"  {n:4d}  {mod}:{name}")
