"""python3 -m pipeline.closure MODULE... | --in-process | --ruff | --tagged NAME=MODULE...

The project files a module loads when it runs: its import closure, read from the source with `ast`
(nothing is imported, so it runs on any Python 3 before the pipeline is installed). The Makefile
makes each stage depend on its entry module's closure; tests/test_desktop.py and pyproject.toml's
ruff target hold the in-process part (what runs inside GPT-SoVITS) to Python 3.9 by the same list.

A file loads a project module when it imports it, anywhere (module level or inside a function,
absolute or relative), and when it names it as a dotted string ("export.clean"): that is how a
module is run as `python -m` or loaded by importlib. Importing a submodule runs its packages'
`__init__.py` too. Third-party and standard-library modules are not followed.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("runtime", "pipeline", "vocoder_models", "export", "build", "serving", "validate")
# The in-process part: every module of the runtime a service copies, and the GPT-SoVITS drop-in with
# every stage it loads into GPT-SoVITS' interpreter (its closure follows whatever the drop-in imports
# or names to run).
DROP_IN = "serving.gpt_sovits"
# Files whose dotted strings name stage commands they start in a new interpreter (`python -m
# serving.gpt_sovits build` runs export, export.clean and build, and checks for Python 3.11 first):
# their imports are followed, those names are not, so the stages stay out of the in-process part.
STARTS_COMMANDS = ("serving/gpt_sovits/bundle_build.py",)
DOTTED = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+")


def module_file(name: str, root: Path = REPO_ROOT) -> Path | None:
    """The file a project module name stands for (a package: its __init__.py), or None."""
    if name.split(".")[0] not in PACKAGES:
        return None
    path = root.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(path: Path, root: Path) -> list[str]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return parts if path.name == "__init__.py" else parts[:-1]


def loaded_names(path: Path, root: Path = REPO_ROOT) -> set[str]:
    """Module names `path` imports or names as a dotted string (see the module's docstring; not in
    STARTS_COMMANDS)."""
    strings = path.relative_to(root).as_posix() not in STARTS_COMMANDS
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            package = _package_of(path, root)
            base = package[:len(package) - (node.level - 1)] if node.level else []  # from . / .. import
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif strings and isinstance(node, ast.Constant) and isinstance(node.value, str) and DOTTED.fullmatch(node.value):
            names.add(node.value)
    return {name for name in names if name}


def _with_packages(path: Path, root: Path) -> list[Path]:
    """The file and the __init__.py of every package above it (Python runs them first)."""
    found = [path]
    folder = path.parent
    while folder != root and (folder / "__init__.py").is_file():
        found.append(folder / "__init__.py")
        folder = folder.parent
    return found


def closure(modules: list[str], root: Path = REPO_ROOT) -> list[Path]:
    """Every project file the `modules` load, followed to the end; a package means its __init__.py
    and its __main__.py (what `python -m PACKAGE` runs)."""
    todo = []
    for name in modules:
        start = module_file(name, root)
        if start is None:
            raise SystemExit(f"error: {name} is not a module of this project ({', '.join(PACKAGES)})")
        todo.append(start)
        if start.name == "__init__.py" and (start.parent / "__main__.py").is_file():
            todo.append(start.parent / "__main__.py")
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in loaded_names(path, root):
            found = module_file(name, root)
            if found is not None:
                todo.extend(_with_packages(found, root))
        todo.extend(_with_packages(path, root)[1:])
    return sorted(seen)


def in_process_files(root: Path = REPO_ROOT) -> list[Path]:
    """What runs inside GPT-SoVITS: every runtime/ module, the drop-in, and all they load."""
    runtime = sorted(f"runtime.{p.stem}" for p in (root / "runtime").glob("*.py") if p.stem != "__init__")
    return closure(["runtime", *runtime, DROP_IN], root)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m pipeline.closure", description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="entry modules, e.g. export.clean (a package: its __main__)")
    parser.add_argument("--in-process", action="store_true", help="the in-process part's closure instead")
    parser.add_argument("--ruff", action="store_true",
                        help="the in-process part as pyproject.toml's [tool.ruff.per-file-target-version] lines")
    parser.add_argument("--tagged", action="store_true",
                        help="MODULES are NAME=MODULE: print every file of each as NAME:FILE (the Makefile's one call)")
    args = parser.parse_args(argv)
    if args.tagged:
        stages = dict(entry.split("=", 1) for entry in args.modules)
        print(" ".join(f"{name}:{path.relative_to(REPO_ROOT).as_posix()}"
                       for name, module in stages.items() for path in closure([module])))
        return 0
    files = in_process_files() if args.in_process or args.ruff else closure(args.modules)
    relative = [path.relative_to(REPO_ROOT).as_posix() for path in files]
    if args.ruff:
        print("\n".join(f'"{name}" = "py39"' for name in relative))
    else:
        print(" ".join(relative))
    return 0


if __name__ == "__main__":
    sys.exit(main())
