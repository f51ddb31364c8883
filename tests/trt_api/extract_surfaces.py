"""Record the Python surface of TensorRT, class by class, as JSON that tests can load.

The runtime and the build code must work on full TensorRT 10, full TensorRT 11 and TensorRT-RTX 1,
whose Python bindings differ member by member. This script writes one JSON file per surface, so a
test (or a test double) can assert which members exist, which properties are settable and which
methods return ``bool`` without having each TensorRT installed.

Two modes:

* pybind sources (full TensorRT, source of truth: NVIDIA/TensorRT ``python/src`` at a release tag,
  plus ``python/packaging/bindings_wheel/tensorrt/__init__.py`` for what the Python layer adds and
  ``include/*.h`` to find ``bool`` return types). Read a checkout with ``--pybind-src DIR``
  (``DIR`` is its ``python/src``) or a bare clone with ``--git-dir G --ref TAG``.
* an installed module (``--module tensorrt_rtx``): introspection with ``vars()`` over the MRO,
  ``property.fset`` and the pybind signature in each docstring.

Rerun for a new release (from the repository root; ``G`` is a clone of NVIDIA/TensorRT, e.g. the
bare one that ``git clone --bare https://github.com/NVIDIA/TensorRT G`` makes)::

    git --git-dir=G fetch --tags
    python3 tests/trt_api/extract_surfaces.py --git-dir G --ref v10.16 --out tests/trt_api/tensorrt-10.json
    python3 tests/trt_api/extract_surfaces.py --git-dir G --ref v11.1 --out tests/trt_api/tensorrt-11.json
    .venv/bin/python tests/trt_api/extract_surfaces.py --module tensorrt_rtx --out tests/trt_api/tensorrt_rtx-1.json

or, with a checkout: ``--pybind-src TensorRT/python/src --version 11.1.0.106 --out ...``
(``--version`` defaults to ``include/NvInferVersion.h``). Change the tag to the newest 10.x / 11.x
release (``git --git-dir=G tag --sort=v:refname``).

Member kinds: ``method``, ``static``, ``property`` (settable; ``"readable": false`` when it has no
getter), ``readonly``, ``static_property``, ``static_readonly``, ``enum_value``, ``enum`` and
``class`` (nested types), ``attribute``. ``"returns": "bool"`` marks methods known to return bool
(return types: best effort; a missing key means not bool or unknown). ``"inherited": "Base"`` marks
members that come from a bound base class. On enums only the values and non-dunder extras are kept,
because pybind gives every enum the same machinery (``name``, ``value``, ``__int__``...).

The source parser assumes a full-bindings build: ``EXPORT_ALL_BINDINGS`` is 1, Linux, pybind11 >=
2.6, every other macro 0 (e.g. ``ENABLE_INETWORK_SERIALIZE``).

Cross-check (done when the JSON files were written; the wheels' libraries need nvidia-smi to install,
so `strings` on the .so of ``tensorrt-cu12-bindings`` 10.16.1.11 and ``tensorrt-cu13-bindings``
11.4.0.106 stood in for importing them): every class, member, enum value and module name parsed
from v10.16 (213 classes, 1215 members) and v11.1 (201 classes, 1128 members) occurs in the
matching .so, so the parser invents nothing and the wheels dropped nothing by name. 10.16.1.11
holds no API-like name the v10.16 sources lack. 11.4.0.106 holds three the v11.1 sources lack:
``DLAWorkspaceAllocationStrategy`` (``SHARED_STATIC``), ``dla_workspace_allocation_strategy`` (its
docstring is Runtime's, as in TensorRT-RTX) and ``release_refit_resources`` (Refitter). Run on
v11.1, the parser also agrees with the introspected tensorrt_rtx 1.7.1 on every class the two
share, kinds and bool returns included, apart from real API differences.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# The classes and enums a surface records (dotted for nested types); extend here.
CLASSES = (
    "Runtime", "ICudaEngine", "IExecutionContext", "IRuntimeConfig", "IRuntimeCache",
    "Builder", "IBuilderConfig", "INetworkDefinition", "ITensor", "OnnxParser", "ParserError",
    "IOptimizationProfile", "ILogger", "Logger", "IProgressMonitor", "IHostMemory",
    "ITimingCache", "IGpuAllocator", "IOutputAllocator",
    "BuilderFlag", "MemoryPoolType", "HardwareCompatibilityLevel", "ComputeCapability",
    "CudaGraphStrategy", "DynamicShapesKernelSpecializationStrategy", "EngineValidity",
    "EngineInvalidityDiagnostics", "TensorIOMode", "DataType", "NetworkDefinitionCreationFlag",
    "ExecutionContextAllocationStrategy", "ILogger.Severity", "TensorLocation", "PreviewFeature",
    "ProfilingVerbosity", "RuntimePlatform",
)

# Preprocessor values of a full-bindings Linux build; unknown macros count as 0.
MACROS = {"EXPORT_ALL_BINDINGS": 1, "tensorrt_EXPORTS": 1, "PYBIND11_VERSION_MAJOR": 2, "PYBIND11_VERSION_MINOR": 13}

# Placeholders of the packaging __init__.py template, filled as for the `tensorrt` module.
TEMPLATE_VALUES = {"TENSORRT_MODULE": "tensorrt", "TENSORRT_PLUGIN_DISABLED": "False"}

MODULE_VAR = "m"  # the name python/src gives the pybind module object
INIT_PY = "python/packaging/bindings_wheel/tensorrt/__init__.py"
VERSION_H = "include/NvInferVersion.h"
# Entries pybind puts in every class dict; they are machinery, not API.
PYBIND_NOISE = {"__doc__", "__module__", "__dict__", "__weakref__", "_pybind11_conduit_v1_"}
PYBIND_NOISE_PREFIX = "__pybind11_module_local"
NOTES = [
    "return types: best effort ('returns': 'bool' only where known to be bool)",
    "members of bound base classes are included, marked 'inherited'",
    "enums: values and non-dunder extras only (pybind enum machinery left out)",
]

DEF_KINDS = {
    "def": "method", "def_static": "static", "def_property": "property",
    "def_property_readonly": "readonly", "def_readwrite": "property", "def_readonly": "readonly",
    "def_property_static": "static_property", "def_property_readonly_static": "static_readonly",
}


# --------------------------------------------------------------------------- reading sources

class GitTree:
    """Files of one ref of a (bare) clone, read with `git show` so no checkout is needed."""

    def __init__(self, git_dir: str, ref: str):
        self.git_dir, self.ref = git_dir, ref

    def _git(self, *args: str) -> str | None:
        proc = subprocess.run(["git", f"--git-dir={self.git_dir}", *args], capture_output=True, check=False)
        return proc.stdout.decode("utf-8", errors="replace") if proc.returncode == 0 else None

    def read(self, rel: str) -> str | None:
        return self._git("show", f"{self.ref}:{rel}")

    def list(self, rel_dir: str) -> list[str]:
        out = self._git("ls-tree", "-r", "--name-only", self.ref, "--", rel_dir) or ""
        return sorted(out.split())

    def describe(self) -> str:
        commit = (self._git("rev-parse", f"{self.ref}^{{commit}}") or "?").strip()
        return f"NVIDIA/TensorRT python/src at {self.ref} (commit {commit})"


class DirTree:
    """Files of a checkout, given its python/src; the root is two levels up."""

    def __init__(self, pybind_src: str):
        self.root = Path(pybind_src).resolve().parent.parent

    def read(self, rel: str) -> str | None:
        path = self.root / rel
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None

    def list(self, rel_dir: str) -> list[str]:
        base = self.root / rel_dir
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def _git(self, *args: str) -> str | None:
        proc = subprocess.run(["git", "-C", str(self.root), *args], capture_output=True, check=False)
        return proc.stdout.decode("utf-8").strip() if proc.returncode == 0 else None

    def describe(self) -> str:
        """The checkout's tag/commit when it is its own git repository, else its path."""
        own = self._git("rev-parse", "--show-toplevel") == str(self.root)
        ref = (self._git("describe", "--tags", "--always") if own else None) or str(self.root)
        return f"NVIDIA/TensorRT python/src at {ref}"


def header_version(tree) -> str | None:
    """X.Y.Z.B from NvInferVersion.h, so --version can be left out."""
    text = tree.read(VERSION_H) or ""
    fields = ("MAJOR", "MINOR", "PATCH", "BUILD")
    parts = [re.search(rf"#define\s+(?:TRT|NV_TENSORRT)_{p}(?:_ENTERPRISE)?\s+(\d+)", text) for p in fields]
    return ".".join(p.group(1) for p in parts) if all(parts) else None


# --------------------------------------------------------------------------- C++ text helpers

def literal_end(text: str, i: int) -> int:
    """Index after the string/char literal starting at i (raw strings included), so scans skip it."""
    if text[i] == "R" and text.startswith('R"', i):
        delim = text[i + 2:text.index("(", i)]
        return text.index(f"){delim}\"", i) + len(delim) + 2
    quote, j = text[i], i + 1
    while j < len(text) and text[j] != quote:
        j += 2 if text[j] == "\\" else 1
    return j + 1


def is_literal_start(text: str, i: int) -> bool:
    """True where a string or char literal starts (not an apostrophe inside a word)."""
    c = text[i]
    if c == '"':
        return True
    if c == "'":
        return i == 0 or not text[i - 1].isalnum()
    return c == "R" and text.startswith('R"', i) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_"))


def strip_comments(text: str) -> str:
    """Blank out comments, keeping literals and newlines, so brackets in comments don't count."""
    out, i = [], 0
    while i < len(text):
        if is_literal_start(text, i):
            j = literal_end(text, i)
            out.append(text[i:j])
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = len(text) if j < 0 else j
        elif text.startswith("/*", i):
            j = text.index("*/", i) + 2
            out.append("\n" * text.count("\n", i, j))
            i = j
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def eval_condition(expr: str, macros: dict[str, int]) -> bool:
    """Value of an #if expression with unknown macros as 0 (the build defines none we need)."""
    expr = re.sub(r"defined\s*\(?\s*(\w+)\s*\)?", lambda m: "1" if m.group(1) in macros else "0", expr)
    expr = re.sub(r"[A-Za-z_]\w*", lambda m: str(macros.get(m.group(0), 0)), expr)
    expr = expr.replace("&&", " and ").replace("||", " or ")
    expr = re.sub(r"!(?!=)", " not ", expr)
    try:
        return bool(eval(expr, {"__builtins__": {}}))  # only digits, operators and parentheses remain
    except SyntaxError:
        print(f"warning: cannot evaluate #if {expr!r}; taken as false", file=sys.stderr)
        return False


def preprocess(text: str, macros: dict[str, int]) -> str:
    """Drop lines in inactive #if branches, so members of other builds are not recorded."""
    out, stack = [], []  # stack of (parent_active, this_branch_active, some_branch_taken)
    active = True
    for line in text.split("\n"):
        m = re.match(r"\s*#\s*(ifdef|ifndef|if|elif|else|endif)\b(.*)", line)
        if not m:
            out.append(line if active else "")
            continue
        word, rest = m.group(1), m.group(2).strip()
        if word in ("if", "ifdef", "ifndef"):
            cond = eval_condition(rest, macros) if word == "if" else (rest in macros) == (word == "ifdef")
            stack.append((active, active and cond, cond))
        elif word == "elif":
            parent, _, taken = stack.pop()
            cond = not taken and eval_condition(rest, macros)
            stack.append((parent, parent and cond, taken or cond))
        elif word == "else":
            parent, _, taken = stack.pop()
            stack.append((parent, parent and not taken, True))
        else:
            stack.pop()
        active = stack[-1][1] if stack else True
        out.append("")
    return "\n".join(out)


def clean_source(text: str) -> str:
    """Comments out, inactive branches out: the text the compiler of a full build sees."""
    return preprocess(strip_comments(text), MACROS)


def matching_close(text: str, i: int) -> int:
    """Index of the bracket closing the one at i, skipping literals and nested brackets."""
    pairs, depth, j = {"(": ")", "{": "}", "[": "]"}, [], i
    while j < len(text):
        c = text[j]
        if is_literal_start(text, j):
            j = literal_end(text, j)
            continue
        if c in pairs:
            depth.append(pairs[c])
        elif depth and c == depth[-1]:
            depth.pop()
            if not depth:
                return j
        j += 1
    raise ValueError(f"unbalanced bracket at {i}")


def template_close(text: str, i: int) -> int:
    """Index of the '>' closing the '<' at i (template argument lists have no comparisons)."""
    depth, j = 0, i
    while j < len(text):
        if text[j] == "<":
            depth += 1
        elif text[j] == ">":
            depth -= 1
            if depth == 0:
                return j
        elif text[j] in "({[":
            j = matching_close(text, j)
        j += 1
    raise ValueError(f"unbalanced template at {i}")


def split_args(text: str) -> list[str]:
    """Split an argument list at top-level commas (template angle brackets respected)."""
    args, start, j, angle = [], 0, 0, 0
    while j < len(text):
        c = text[j]
        if is_literal_start(text, j):
            j = literal_end(text, j)
            continue
        if c in "({[":
            j = matching_close(text, j)
        elif c == "<" and j > 0 and (text[j - 1].isalnum() or text[j - 1] == "_") and text[j + 1:j + 2] != "<":
            angle += 1
        elif c == ">" and angle and text[j - 1] != "-":
            angle -= 1
        elif c == "," and not angle:
            args.append(text[start:j].strip())
            start = j + 1
        j += 1
    tail = text[start:].strip()
    return args + [tail] if tail or args else args


def string_literal(arg: str) -> str | None:
    """The value of an argument that is a plain string literal, else None."""
    m = re.fullmatch(r'"((?:[^"\\]|\\.)*)"', arg.strip())
    return m.group(1) if m else None


def cpp_name(type_text: str) -> str:
    """A C++ type without namespace qualifiers, to match types spelled differently."""
    return re.sub(r"\b(?:nvinfer1|nvonnxparser|tensorrt|std)::", "", type_text.strip())


# --------------------------------------------------------------------------- bindings in python/src

def parse_chain(text: str, i: int) -> tuple[list[tuple[str, list[str]]], int]:
    """The `.name(args)` calls chained from index i, as (name, args), and where they end."""
    calls = []
    while True:
        m = re.compile(r"\s*\.\s*(\w+)\s*(?:<[^<>()]*>)?\s*\(").match(text, i)
        if not m:
            return calls, i
        close = matching_close(text, m.end() - 1)
        calls.append((m.group(1), split_args(text[m.end():close])))
        i = close + 1


def find_bindings(text: str) -> list[dict]:
    """Every py::class_/py::enum_/py::bind_vector statement: its type, scope, name and chain."""
    found = []
    for m in re.finditer(r"\bpy::(class_|enum_|bind_vector)\s*<", text):
        close = template_close(text, m.end() - 1)
        targs = split_args(text[m.end():close])
        d = re.compile(r"\s*(\w+)?\s*([({])").match(text, close + 1)
        if not d:
            continue
        end = matching_close(text, d.end() - 1)
        args = split_args(text[d.end():end])
        chain, _ = parse_chain(text, end + 1) if not d.group(1) else ([], end)
        found.append({"what": m.group(1), "targs": targs, "var": d.group(1), "args": args, "chain": chain})
    return found


def find_var_chains(text: str, var: str) -> list[list[tuple[str, list[str]]]]:
    """Chains started later from a named binding (`baseLoggerBinding.def(...)`)."""
    return [parse_chain(text, m.end())[0] for m in re.finditer(rf"(?<![\w.>:]){re.escape(var)}(?=\s*\.)", text)]


def init_or_name(args: list[str]) -> str | None:
    """Member name of a .def(...) call: its string literal, or __init__ for py::init."""
    if not args:
        return None
    return "__init__" if args[0].startswith("py::init") else string_literal(args[0])


def member_from_call(call: str, args: list[str]) -> tuple[str, dict] | None:
    """(name, entry) for one chained call, or None for calls that add no member."""
    if call == "value":
        name = string_literal(args[0]) if args else None
        entry = {"kind": "enum_value", "cpp": args[1]} if len(args) > 1 else {"kind": "enum_value"}
        return (name, entry) if name else None
    if call not in DEF_KINDS:
        return None
    name = init_or_name(args)
    if not name:
        return None
    entry = {"kind": DEF_KINDS[call]}
    if call in ("def_property", "def_property_static"):
        if len(args) > 2 and args[2] == "nullptr":
            entry["kind"] = "readonly" if call == "def_property" else "static_readonly"
        if len(args) > 1 and args[1] == "nullptr":
            entry["readable"] = False
    if entry["kind"] in ("method", "static") and len(args) > 1:
        entry["callable"] = args[1]
    return name, entry


def add_member(members: dict, name: str, entry: dict) -> None:
    """Record one member; overloads of a method merge their callables."""
    old = members.get(name)
    callables = (old or {}).get("callables", []) + ([entry.pop("callable")] if "callable" in entry else [])
    members[name] = {**(old or {}), **entry}
    if callables:
        members[name]["callables"] = callables


def register_binding(reg: dict, b: dict, var_scope: dict[str, str]) -> str | None:
    """Add one binding to the registry; returns its dotted Python name."""
    name = string_literal(b["args"][1]) if len(b["args"]) > 1 else None
    if not name:
        print(f"warning: binding without literal name: {b['targs'][:1]} {b['args'][:2]}", file=sys.stderr)
        return None
    scope = b["args"][0]
    parent = None if scope == MODULE_VAR else var_scope.get(scope)
    if scope != MODULE_VAR and parent is None:
        print(f"warning: unknown scope {scope!r} for {name}", file=sys.stderr)
    dotted = f"{parent}.{name}" if parent else name
    kind = "enum" if b["what"] == "enum_" else "class"
    reg["classes"].setdefault(dotted, {"kind": kind, "cpp": cpp_name(b["targs"][0]), "bases": b["targs"][1:], "members": {}})
    if parent:
        reg["classes"][parent]["members"][name] = {"kind": kind}
    if b["var"]:
        var_scope[b["var"]] = dotted
    return dotted


def apply_chain(reg: dict, dotted: str, chain: list[tuple[str, list[str]]]) -> None:
    """Add the members a chain of .def/.value calls declares; export_values copies values up."""
    cls = reg["classes"][dotted]
    for call, args in chain:
        if call == "export_values" and "." in dotted:
            parent = reg["classes"][dotted.rsplit(".", 1)[0]]
            for v, e in cls["members"].items():
                if e["kind"] == "enum_value":
                    parent["members"][v] = dict(e)
            continue
        found = member_from_call(call, args)
        if found:
            add_member(cls["members"], *found)


def module_level(text: str) -> dict[str, dict]:
    """Functions and attributes the C++ puts on the module (m.def, m.attr(...) = ...)."""
    names = {}
    for m in re.finditer(rf"(?<![\w.]){MODULE_VAR}\s*\.\s*def\s*\(\s*\"(\w+)\"", text):
        names[m.group(1)] = {"kind": "function"}
    for m in re.finditer(rf"(?<![\w.]){MODULE_VAR}\s*\.\s*attr\s*\(\s*\"(\w+)\"\s*\)\s*=(?!=)", text):
        names[m.group(1)] = {"kind": "attribute"}
    return names


def parse_sources(files: dict[str, str]) -> dict:
    """Registry of classes (with members) and module names from cleaned python/src files."""
    reg = {"classes": {}, "module": {}}
    for text in files.values():
        var_scope: dict[str, str] = {}
        for b in find_bindings(text):
            dotted = register_binding(reg, b, var_scope)
            if dotted:
                apply_chain(reg, dotted, b["chain"])
        for var, dotted in var_scope.items():
            for chain in find_var_chains(text, var):
                apply_chain(reg, dotted, chain)
        reg["module"].update(module_level(text))
    for dotted, cls in reg["classes"].items():
        if "." not in dotted:
            reg["module"][dotted] = {"kind": cls["kind"]}
    return reg


# --------------------------------------------------------------------------- enum values

ENUMERATOR = re.compile(r"^\s*(?:TRT_DEPRECATED_ENUM\s+)?(\w+)\s*(?:TRT_DEPRECATED_ENUM\s*)?(?:=\s*(.+?))?\s*$", re.DOTALL)


def integer_of(expression: str, known: dict[str, int]) -> int:
    """The value of one enumerator's initialiser: literals (U/L suffixes), shifts, ors and earlier names."""
    text = re.sub(r"(?<=[0-9a-fA-Fx])[uUlL]+\b", "", expression.strip())
    tree = ast.parse(text, mode="eval")

    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and node.id in known:
            return known[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        if isinstance(node, ast.BinOp):
            ops = {ast.LShift: lambda a, b: a << b, ast.BitOr: lambda a, b: a | b, ast.Add: lambda a, b: a + b,
                   ast.Sub: lambda a, b: a - b}
            if type(node.op) in ops:
                return ops[type(node.op)](value(node.left), value(node.right))
        raise ValueError(f"cannot evaluate enumerator initialiser {expression!r}")
    return value(tree.body)


def header_enums(headers: list[str]) -> dict[str, dict[str, int]]:
    """C++ enum name -> {enumerator: integer}, from the public headers (enum class bodies)."""
    enums: dict[str, dict[str, int]] = {}
    constants = {m.group(1): int(m.group(2), 0) for text in headers for m in
                 re.finditer(r"\bconstexpr\s+[\w:]+\s+(\w+)\s*\{?\s*=?\s*(0x[0-9a-fA-F]+|\d+)[uUlL]*\s*\}?\s*;", text)}
    for text in headers:
        for m in re.finditer(r"\benum\s+(?:class\s+)?(\w+)\s*(?::\s*[\w:]+\s*)?\{", text):
            close = matching_close(text, m.end() - 1)
            values: dict[str, int] = {}
            following = 0
            for item in split_args(text[m.end():close]):
                found = ENUMERATOR.match(item)
                if not found or not item.strip():
                    continue
                name, initialiser = found.groups()
                try:
                    following = integer_of(initialiser, {**constants, **values}) if initialiser else following
                except (ValueError, SyntaxError):
                    break  # an initialiser this parser cannot evaluate: the rest of this enum stays unknown
                values[name] = following
                following += 1
            enums.setdefault(m.group(1), values)
    return enums


def resolve_enum_values(reg: dict, enums: dict[str, dict[str, int]]) -> None:
    """Give every enum_value its integer: the pybind `.value("NAME", Enum::kNAME)` argument looked up
    in the headers' enum bodies (`"value"`); one the headers do not define is reported and left out."""
    for dotted, cls in reg["classes"].items():
        for name, entry in cls["members"].items():
            cpp = entry.pop("cpp", None)
            if entry["kind"] != "enum_value" or cpp is None:
                continue
            parts = [p for p in re.split(r"\s*::\s*", cpp.strip()) if p]
            table = enums.get(parts[-2]) if len(parts) >= 2 else None
            if table is None or parts[-1] not in table:
                if dotted in CLASSES:
                    print(f"warning: no header value for {dotted}.{name} ({cpp})", file=sys.stderr)
                continue
            entry["value"] = table[parts[-1]]


# --------------------------------------------------------------------------- bool return types

def header_classes(headers: list[str]) -> dict[str, str]:
    """C++ class name -> body text, from the public headers, to look up method declarations."""
    bodies: dict[str, str] = {}
    for text in headers:
        for m in re.finditer(r"\bclass\s+(?:TENSORRTAPI\s+|TRT_DEPRECATED\s+)*(\w+)\s*(?:final\s*)?(?::[^;{]*)?\{", text):
            close = matching_close(text, m.end() - 1)
            bodies.setdefault(m.group(1), text[m.end():close])
    return bodies


NOT_TYPES = {"return", "else", "new", "delete", "throw", "case"}


def method_returns_bool(bodies: dict[str, str], cls: str, method: str) -> bool | None:
    """True/False when the header declares cls::method, None when it is not found."""
    body = bodies.get(cls.split("::")[-1])
    pattern = rf"(?:^|[;{{}}])\s*(?:TRT_\w+\s+|virtual\s+|static\s+|inline\s+)*([\w:<>,\s\*&]+?)\s+\**&?{method}\s*\("
    for decl in re.finditer(pattern, body or "", re.MULTILINE):
        last = decl.group(1).split()[-1]
        if last not in NOT_TYPES:
            return last == "bool"
    return None


def returns_bool_from(explicit: str | None, params: str, body: str, bodies: dict[str, str]) -> bool | None:
    """Bool-ness from a declared return type, else from the return statements of the body."""
    if explicit and explicit.strip() != "auto":
        return explicit.strip() == "bool"
    if re.search(r"\breturn\s+(?:true|false)\s*;", body):
        return True
    fwd = re.search(r"\breturn\s+self\s*\.\s*(\w+)\s*\(", body)
    self_type = re.match(r"\s*(?:const\s+)?([\w:]+)\s*(?:const\s*)?&\s*self", params)
    if fwd and self_type:
        return method_returns_bool(bodies, cpp_name(self_type.group(1)), fwd.group(1))
    return None


def lambda_returns_bool(text: str, bodies: dict[str, str]) -> bool | None:
    """Whether a C++ lambda or function definition returns bool (None: cannot tell)."""
    lam = re.match(r"\s*\[[^\]]*\]\s*\(([^)]*)\)[^{]*?(?:->\s*([\w:<>\s,\*&]+?))?\s*\{", text)
    if lam:
        return returns_bool_from(lam.group(2), lam.group(1), text[lam.end():], bodies)
    fn = re.match(r"\s*(?:template\s*<[^>]*>\s*)?(?:static\s+|inline\s+)*([\w:<>\*&]+)\s+\w+\s*\(([^)]*)\)", text)
    if fn:
        return returns_bool_from(fn.group(1), fn.group(2), text[fn.end():], bodies)
    return None


def named_callables(text: str) -> dict[str, str]:
    """Named lambdas (`auto const x = [...]...{...}`) and functions of a file, by name, as text."""
    named = {}
    for m in re.finditer(r"\b(?:static\s+)?auto\s+(?:const\s+)?(\w+)\s*=\s*(?=\[)", text):
        brace = text.find("{", m.end())
        named.setdefault(m.group(1), text[m.end():matching_close(text, brace) + 1])
    function = re.compile(r"^[ \t]*(?:template\s*<[^>]*>\s*)?(?:static\s+|inline\s+)*[\w:<>\*&]+\s+(\w+)\s*"
                          r"\([^;{]*\)\s*(?:const\s*)?(?:noexcept\s*)?\{", re.MULTILINE)
    for m in function.finditer(text):
        named.setdefault(m.group(1), text[m.start():matching_close(text, m.end() - 1) + 1])
    return named


def callable_returns_bool(arg: str, named: dict[str, str], bodies: dict[str, str]) -> bool | None:
    """Whether the function bound by .def(name, ARG, ...) returns bool (None: unknown)."""
    arg = arg.strip()
    if arg.startswith("["):
        return lambda_returns_bool(arg, bodies)
    ref = re.search(r"&\s*([\w:]+)::(\w+)", arg)
    lam = re.match(r"&?\s*(?:\w+::)*(\w+)\s*(?:<[^>]*>)?\s*$", arg) or re.search(r"\blambdas::(\w+)", arg)
    if lam and lam.group(1) in named and not (ref and ref.group(1) != "lambdas"):
        return lambda_returns_bool(named[lam.group(1)], bodies)
    if ref:
        return method_returns_bool(bodies, cpp_name(ref.group(1)), ref.group(2))
    return None


def resolve_returns(reg: dict, named: dict[str, str], bodies: dict[str, str]) -> None:
    """Replace each method's callables with 'returns': 'bool' where every known overload returns bool."""
    for cls in reg["classes"].values():
        for entry in cls["members"].values():
            results = [callable_returns_bool(c, named, bodies) for c in entry.pop("callables", [])]
            known = [r for r in results if r is not None]
            if known and all(known):
                entry["returns"] = "bool"


# --------------------------------------------------------------------------- the Python layer (__init__.py)

def fill_template(text: str) -> str:
    """Fill the ##NAME## placeholders so the template parses as Python."""
    return re.sub(r"##(\w+)##", lambda m: TEMPLATE_VALUES.get(m.group(1), "0"), text)


def static_truth(test: ast.expr) -> bool | None:
    """Value of an if-test made of literals only (module-name checks); None for runtime tests."""
    try:
        return bool(eval(compile(ast.Expression(test), "<init>", "eval"), {"__builtins__": {}}))
    except (NameError, AttributeError, TypeError, SyntaxError):
        return None  # refers to runtime state (sys.platform, imports): not decidable here


def assigned_member(value: ast.expr, reg: dict) -> dict:
    """Kind of a `Class.attr = value` assignment in the Python layer."""
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "property":
        return {"kind": "property" if len(value.args) > 1 else "readonly"}
    if isinstance(value, (ast.Lambda, ast.Name)):
        return {"kind": "method"}
    if isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name):
        nested = reg["classes"].get(f"{value.value.id}.{value.attr}")
        if nested:
            return {"kind": nested["kind"]}
    return {"kind": "attribute"}


def apply_python_statement(node: ast.stmt, reg: dict) -> None:
    """Record what one top-level statement of __init__.py adds to the module or a class."""
    if isinstance(node, ast.FunctionDef):
        reg["module"][node.name] = {"kind": "function"}
    elif isinstance(node, ast.Assign):
        for target in node.targets:
            if isinstance(target, ast.Name):
                reg["module"][target.id] = {"kind": "attribute"}
            elif isinstance(target, ast.Attribute) and getattr(target.value, "id", None) in reg["classes"]:
                reg["classes"][target.value.id]["members"][target.attr] = assigned_member(node.value, reg)
    elif isinstance(node, ast.For):
        apply_python_for(node, reg)
    elif isinstance(node, ast.If):
        truth = static_truth(node.test)
        for sub in {True: node.body, False: node.orelse, None: []}[truth]:
            apply_python_statement(sub, reg)
    elif isinstance(node, ast.Try):
        for sub in node.body + node.orelse:
            apply_python_statement(sub, reg)
    elif isinstance(node, ast.Delete):
        for target in node.targets:
            if isinstance(target, ast.Name):
                reg["module"].pop(target.id, None)


def apply_python_for(node: ast.For, reg: dict) -> None:
    """`for a, v in Enum.__members__.items(): setattr(Cls, a, v)` copies enum values; loop names leak to the module."""
    for name in ast.walk(node.target):
        if isinstance(name, ast.Name):
            reg["module"][name.id] = {"kind": "attribute"}
    source = ast.unparse(node.iter)
    m = re.fullmatch(r"([\w.]+)\.__members__\.items\(\)", source)
    for sub in node.body:
        call = sub.value if isinstance(sub, ast.Expr) else None
        if m and isinstance(call, ast.Call) and ast.unparse(call.func) == "setattr" and m.group(1) in reg["classes"]:
            target = ast.unparse(call.args[0])
            for value, entry in reg["classes"][m.group(1)]["members"].items():
                if entry["kind"] == "enum_value" and target in reg["classes"]:
                    reg["classes"][target]["members"][value] = dict(entry)


def apply_python_layer(text: str, reg: dict) -> None:
    """Add what the packaging __init__.py defines on top of the compiled module."""
    for node in ast.parse(fill_template(text)).body:
        apply_python_statement(node, reg)


# --------------------------------------------------------------------------- surface assembly

def public_module(names: dict[str, dict]) -> dict[str, dict]:
    """Module names a user sees: no private names except __version__."""
    return {n: e for n, e in names.items() if not n.startswith("_") or n == "__version__"}


def keep_member(name: str, is_enum: bool) -> bool:
    """Whether a member is API: pybind machinery out, and on enums all dunders out."""
    if name in PYBIND_NOISE or name.startswith(PYBIND_NOISE_PREFIX):
        return False
    return not (is_enum and (name.startswith("__") or name in ("name", "value")))


def with_inherited(reg: dict, dotted: str) -> dict[str, dict]:
    """Members of a registry class plus those of its bound bases (as dir() shows them)."""
    by_cpp = {c["cpp"]: d for d, c in reg["classes"].items()}
    cls = reg["classes"][dotted]
    members = {n: dict(e) for n, e in cls["members"].items() if keep_member(n, cls["kind"] == "enum")}
    for base in cls["bases"]:
        base_dotted = by_cpp.get(cpp_name(base))
        if base_dotted is None or base_dotted == dotted:
            continue
        for n, e in with_inherited(reg, base_dotted).items():
            members.setdefault(n, {**e, "inherited": e.get("inherited", base_dotted)})
    return members


def surface_from_registry(reg: dict) -> tuple[dict, list[str]]:
    """The recorded classes (members sorted by json) and the names absent from this surface."""
    present = {d: with_inherited(reg, d) for d in CLASSES if d in reg["classes"]}
    return present, [d for d in CLASSES if d not in reg["classes"]]


def read_pybind_sources(tree) -> dict[str, str]:
    """Cleaned text of every C++ file under python/src."""
    return {p: clean_source(tree.read(p) or "") for p in tree.list("python/src") if p.endswith((".cpp", ".h"))}


def read_headers(tree) -> list[str]:
    """Cleaned public headers (include/*.h), for bool return types; empty if absent."""
    return [strip_comments(tree.read(p) or "") for p in tree.list("include") if p.endswith(".h")]


def surface_from_sources(tree, version: str | None, surface: str | None) -> dict:
    """The surface of full TensorRT as its pybind sources and __init__.py declare it."""
    files = read_pybind_sources(tree)
    reg = parse_sources(files)
    named = {}
    for text in files.values():
        named.update(named_callables(text))
    headers = read_headers(tree)
    resolve_returns(reg, named, header_classes(headers))
    resolve_enum_values(reg, header_enums(headers))
    init_py = tree.read(INIT_PY)
    if init_py:
        apply_python_layer(init_py, reg)
    version = version or header_version(tree) or "unknown"
    classes, absent = surface_from_registry(reg)
    return {"surface": surface or f"tensorrt-{version.split('.')[0]}", "version": version,
            "source": tree.describe(), "classes": classes, "absent": absent,
            "module": public_module(reg["module"]), "notes": NOTES}


# --------------------------------------------------------------------------- installed module

def is_enum_type(obj) -> bool:
    """pybind enums carry __members__; plain classes do not."""
    return isinstance(obj, type) and hasattr(obj, "__members__")


def signature_returns_bool(func, name: str) -> bool | None:
    """From a pybind docstring's signature line(s): True if every overload returns bool."""
    sigs = re.findall(rf"^\s*(?:\d+\.\s*)?{re.escape(name)}\(.*\)\s*->\s*(.+?)\s*$", func.__doc__ or "", re.MULTILINE)
    return all(s == "bool" for s in sigs) if sigs else None


def introspect_member(owner: type, name: str, value) -> dict | None:
    """Kind of one class-dict entry; None for what pybind adds to every class."""
    if name == "__init__" and type(value).__name__ == "wrapper_descriptor":
        return None  # a class without py::init: the slot pybind gives every type
    if value is None and name.startswith("__"):
        return None  # e.g. __hash__ = None, set implicitly when a class defines __eq__
    if isinstance(value, staticmethod):
        return {"kind": "static"}
    if type(value).__name__ == "pybind11_static_property":
        return {"kind": "static_readonly" if value.fset is None else "static_property"}
    if isinstance(value, property):
        entry = {"kind": "readonly" if value.fset is None else "property"}
        return {**entry, "readable": False} if value.fget is None else entry
    if isinstance(value, type):
        return {"kind": "enum" if is_enum_type(value) else "class"}
    if is_enum_type(type(value)):
        return {"kind": "enum_value", "value": int(value)}
    if callable(value):
        entry = {"kind": "method"}
        return {**entry, "returns": "bool"} if signature_returns_bool(value, name) else entry
    return {"kind": "attribute"}


def introspect_class(cls: type) -> dict[str, dict]:
    """Members over the MRO (own first), skipping pybind's base object and object itself."""
    members: dict[str, dict] = {}
    for klass in cls.__mro__:
        if klass is object or klass.__module__ == "pybind11_builtins":
            continue
        for name, value in vars(klass).items():
            entry = introspect_member(klass, name, value) if keep_member(name, is_enum_type(cls)) else None
            if entry and name not in members:
                members[name] = entry if klass is cls else {**entry, "inherited": klass.__name__}
    return members


def resolve_dotted(module, dotted: str):
    """The object at a dotted path (`ILogger.Severity`), or None."""
    obj = module
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) else None


def introspect_module_names(module) -> dict[str, dict]:
    """Top-level names by kind; submodules (and the stdlib the package imports) are left out."""
    names = {}
    for name in dir(module):
        value = getattr(module, name)
        if type(value).__name__ == "module":
            continue
        if isinstance(value, type):
            names[name] = {"kind": "enum" if is_enum_type(value) else "class"}
        else:
            names[name] = {"kind": "function" if callable(value) and not is_enum_type(type(value)) else "attribute"}
    return public_module(names)


def surface_from_module(module_name: str, surface: str | None) -> dict:
    """The surface of an installed TensorRT module, by introspection."""
    module = importlib.import_module(module_name)
    version = getattr(module, "__version__", "unknown")
    classes = {d: introspect_class(c) for d in CLASSES if (c := resolve_dotted(module, d)) is not None}
    binding = getattr(resolve_dotted(module, "ICudaEngine"), "__module__", module_name)
    return {"surface": surface or f"{module_name}-{version.split('.')[0]}", "version": version,
            "source": f"installed module {module_name} {version} (compiled {binding}), introspected",
            "classes": classes, "absent": [d for d in CLASSES if d not in classes],
            "module": introspect_module_names(module), "notes": NOTES}


# --------------------------------------------------------------------------- output

def write_json(path: str, data: dict) -> None:
    """Pretty, sorted, UTF-8 JSON written through a temporary file so readers never see half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name, suffix=".tmp", dir=target.parent)
    mask = os.umask(0)
    os.umask(mask)
    try:
        os.fchmod(fd, 0o666 & ~mask)  # mkstemp makes 0600; the file is meant to be committed
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line: one source (pybind dir, git ref or module) and --out."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pybind-src", metavar="DIR", help="a TensorRT checkout's python/src")
    src.add_argument("--git-dir", metavar="G", help="a (bare) clone of NVIDIA/TensorRT; needs --ref")
    src.add_argument("--module", metavar="NAME", help="an importable TensorRT module, e.g. tensorrt_rtx")
    p.add_argument("--ref", help="tag or commit for --git-dir")
    p.add_argument("--version", help="X.Y.Z.B (default: include/NvInferVersion.h, or the module's __version__)")
    p.add_argument("--surface", help="surface name (default: tensorrt-MAJOR or MODULE-MAJOR)")
    p.add_argument("--out", required=True, help="JSON file to write")
    args = p.parse_args(argv)
    if args.git_dir and not args.ref:
        p.error("--git-dir needs --ref")
    return args


def main(argv: list[str] | None = None) -> int:
    """Build one surface and write it."""
    args = parse_args(argv)
    if args.module:
        data = surface_from_module(args.module, args.surface)
        data["version"] = args.version or data["version"]
    else:
        tree = GitTree(args.git_dir, args.ref) if args.git_dir else DirTree(args.pybind_src)
        data = surface_from_sources(tree, args.version, args.surface)
    write_json(args.out, data)
    absent = ", ".join(data["absent"]) or "none"
    print(f"{args.out}: {data['surface']} {data['version']}, {len(data['classes'])} classes, absent: {absent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
