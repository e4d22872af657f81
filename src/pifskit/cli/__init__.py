"""Thin command-line interface over the library: ``pifskit <command> ...``, one module per command with
``register(subparsers)``. Bad input (:class:`PifsError`, argparse errors) prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .._validate import PifsError

#: command modules, in the order ``pifskit --help`` lists them
COMMAND_MODULES: list[str] = [f"pifskit.cli.{name}_cmd" for name in
                              ("report", "geometry", "lyapunov", "analyze", "train", "sample", "bench", "design",
                               "diffusers")]

#: optional third-party package -> the pifskit extra that installs it
EXTRAS: dict[str, str] = {"torch": "torch", "sklearn": "data", "diffusers": "diffusers"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        self.exit(2, f"pifskit: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pifskit", description="PIFS geometry toolkit for diffusion models")
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"pifskit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except PifsError as exc:
        print(f"pifskit: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if root not in EXTRAS:
            raise
        print(f"pifskit: error: this command needs {root}: pip install 'pifskit[{EXTRAS[root]}]'", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `pifskit geometry --json | head`: stop quietly
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:  # pragma: no cover
        print("pifskit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
