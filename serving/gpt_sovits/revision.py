"""What this GPT-SoVITS offers the launcher, read from its source with `ast` (never imported, never hashed).

The launcher recognises GPT-SoVITS by behaviour: for the entry point it starts, every class,
function, method, module-level name, attribute and dictionary key that the launcher and the
drop-in wrap, call or read is looked up in the files that define them, with the parameters they
are called with. Comments, line endings, edited defaults and unrelated changes do not matter;
a missing piece does, and `check` names it and where. It also reads which features the revision
has: which vocoders inference_webui.py loads (20250228v3: only BigVGAN) and how api_v2.py takes
`streaming_mode` (a bool before 2025-11-28, the modes 0-3 since).
"""
from __future__ import annotations

import ast
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from pipeline.errors import UserError
from pipeline.settings import VOCODERS

TTS_FILE = "GPT_SoVITS/TTS_infer_pack/TTS.py"
MODELS_FILE = "GPT_SoVITS/module/models.py"
WEBUI_FILE = "GPT_SoVITS/inference_webui.py"
TTS_MODULES = ("TTS_infer_pack.TTS", "GPT_SoVITS.TTS_infer_pack.TTS")
ENTRY_SCRIPTS = {"api": "api_v2.py", "webui-parallel": "GPT_SoVITS/inference_webui_fast.py", "webui": WEBUI_FILE}
# inference_webui.py: (vocoder, the function that loads it, the module-level name it loads it into)
WEBUI_VOCODERS = (("v3", "init_bigvgan", "bigvgan_model"), ("v4", "init_hifigan", "hifigan_model"))

# TTS.py: the TTS methods the drop-in wraps or calls, with the parameters (after self) it passes
# or replaces them with (dropin.py, fragments.py, launcher.py)
TTS_METHODS = {
    "__init__": ("configs",),
    "run": ("inputs",),
    "init_vocoder": ("version",),
    "enable_half_precision": ("enable", "save"),
    "set_device": ("device", "save"),
    "stop": (),
    "using_vocoder_synthesis": ("semantic_tokens", "phones", "speed", "sample_steps"),
    "using_vocoder_synthesis_batched_infer": ("idx_list", "semantic_tokens_list", "batch_phones", "speed",
                                              "sample_steps"),
    "audio_postprocess": ("audio", "sr", "batch_index_list", "speed_factor", "split_bucket", "fragment_interval",
                          "super_sampling"),
}
TTS_ATTRIBUTES = ("configs", "precision", "vocoder", "vocoder_configs", "prompt_cache", "vits_model")
CONFIG_ATTRIBUTES = ("version", "device", "is_half", "use_vocoder", "sampling_rate", "default_configs")
DICT_KEYS = {"vocoder_configs": ("sr", "upsample_rate", "T_ref", "T_chunk"),
             "prompt_cache": ("prompt_semantic", "phones", "refer_spec", "raw_audio", "raw_sr")}
TTS_MODULE_NAMES = ("mel_fn", "mel_fn_v4", "resample", "norm_spec", "denorm_spec")  # synthesis.UPSTREAM_HELPERS
# module/models.py: what the streaming CFM loop calls (synthesis.py)
MODEL_METHODS = {("SynthesizerTrnV3", "decode_encp"): ("codes", "text", "refer", "ge", "speed"),
                 ("CFM", "inference"): ("mu", "x_lens", "prompt", "n_timesteps", "temperature", "inference_cfg_rate")}
WEBUI_NAMES = ("is_half", "device")


@dataclass(frozen=True)
class Revision:
    """What the entry point `script` offers: `missing`, each 'what (where)'; the vocoders it can
    serve; `streaming`: "modes" (api_v2's streaming_mode 0-3), "bool" (true/false), or "" (none)."""
    script: str
    missing: tuple[str, ...]
    vocoders: tuple[str, ...]
    streaming: str


class Source:
    """One Python file of GPT-SoVITS as an ast (None where absent or not Python this can parse)."""

    def __init__(self, root: Path, name: str):
        self.name = name
        self.tree = parsed(root / name)

    def top_level(self) -> Iterator[ast.stmt]:
        """The module's statements, into if/try/with/for blocks but not into functions or classes."""
        return top_level_statements(self.tree.body if self.tree else [])

    def function(self, name: str) -> Optional[ast.FunctionDef]:
        return next((node for node in self.top_level() if isinstance(node, ast.FunctionDef) and node.name == name), None)

    def class_def(self, name: str) -> Optional[ast.ClassDef]:
        return next((node for node in self.top_level() if isinstance(node, ast.ClassDef) and node.name == name), None)

    def method(self, class_name: str, name: str) -> Optional[ast.FunctionDef]:
        cls = self.class_def(class_name)
        body = cls.body if cls else []
        return next((node for node in body if isinstance(node, ast.FunctionDef) and node.name == name), None)

    def module_names(self) -> set[str]:
        """Names bound at module level: defs, classes, assignments, imports."""
        names: set[str] = set()
        for node in self.top_level():
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
            else:
                names.update(bound_names(node))
        return names

    def assigned_attributes(self) -> set[str]:
        """Every `x.name = ...` (or annotated) anywhere in the file, and class-level names."""
        found: set[str] = set()
        for node in ast.walk(self.tree) if self.tree else []:
            for target in assignment_targets(node):
                if isinstance(target, ast.Attribute):
                    found.add(target.attr)
            if isinstance(node, ast.ClassDef):
                for statement in node.body:
                    found.update(bound_names(statement))
        return found

    def dict_keys(self, attribute: str) -> set[str]:
        """String keys ever stored in `<x>.attribute`: `x.attribute["key"] = ...` and `x.attribute = {"key": ...}`."""
        keys: set[str] = set()
        for node in ast.walk(self.tree) if self.tree else []:
            for target in assignment_targets(node):
                if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Attribute)
                        and target.value.attr == attribute):
                    key = subscript_key(target)
                    if key is not None:
                        keys.add(key)
                if isinstance(target, ast.Attribute) and target.attr == attribute and isinstance(node.value, ast.Dict):
                    keys.update(k.value for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str))
        return keys

    def imports_from(self, modules: tuple[str, ...], name: str) -> bool:
        return any(isinstance(node, ast.ImportFrom) and node.module in modules
                   and any(alias.name == name for alias in node.names) for node in ast.walk(self.tree or ast.Module()))


def parsed(path: Path) -> Optional[ast.Module]:
    try:
        return ast.parse(path.read_bytes().decode("utf-8-sig"), filename=str(path))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return None


def top_level_statements(body: list) -> Iterator[ast.stmt]:
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.For, ast.While, ast.With)):
            yield from top_level_statements(node.body + getattr(node, "orelse", []))
        elif isinstance(node, ast.Try):
            handlers = list(itertools.chain.from_iterable(handler.body for handler in node.handlers))
            yield from top_level_statements(node.body + handlers + node.orelse + node.finalbody)


def assignment_targets(node: ast.AST) -> list:
    if isinstance(node, ast.Assign):
        return [leaf for target in node.targets for leaf in unpacked(target)]
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        return [node.target]
    return []


def unpacked(target: ast.expr) -> list:
    if isinstance(target, (ast.Tuple, ast.List)):
        return [leaf for element in target.elts for leaf in unpacked(element)]
    return [target]


def bound_names(node: ast.AST) -> set[str]:
    return {target.id for target in assignment_targets(node) if isinstance(target, ast.Name)}


def subscript_key(target: ast.Subscript) -> Optional[str]:
    key = target.slice
    return key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else None


def accepts(function: Optional[ast.FunctionDef], parameters: tuple[str, ...], method: bool = True) -> bool:
    """`function` takes `parameters` as its leading positional parameters (after self), and needs no others."""
    if function is None:
        return False
    arguments = function.args
    positional = [a.arg for a in getattr(arguments, "posonlyargs", []) + arguments.args][1 if method else 0:]
    required = len(positional) - len(arguments.defaults)
    return positional[:len(parameters)] == list(parameters) and required <= len(parameters)


def signature(name: str, parameters: tuple[str, ...]) -> str:
    return f"{name}({', '.join(parameters)})"


# --- the checks, one per file ------------------------------------------------------------------------

def tts_file_missing(source: Source) -> list[str]:
    """TTS.py: the TTS class's methods, attributes and keys, the module-level helpers."""
    if source.class_def("TTS") is None:
        return ["class TTS"]
    missing = [signature(f"TTS.{name}", params) for name, params in TTS_METHODS.items()
               if not accepts(source.method("TTS", name), params)]
    assigned = source.assigned_attributes()
    missing += [f"TTS.{name}" for name in TTS_ATTRIBUTES if name not in assigned]
    missing += [f"TTS_Config.{name}" for name in CONFIG_ATTRIBUTES if name not in assigned]
    for attribute, keys in DICT_KEYS.items():
        stored = source.dict_keys(attribute)
        missing += [f"TTS.{attribute}[{key!r}]" for key in keys if key not in stored]
    names = source.module_names()
    return missing + [name for name in TTS_MODULE_NAMES if name not in names]


def models_file_missing(source: Source) -> list[str]:
    return [signature(f"{cls}.{name}", params) for (cls, name), params in MODEL_METHODS.items()
            if not accepts(source.method(cls, name), params)]


def webui_missing(source: Source) -> tuple[list[str], tuple[str, ...]]:
    """inference_webui.py: the vocoder loaders it has (each callable without arguments, loading into
    its module-level name), and the module-level names the wrapper reads."""
    vocoders = tuple(version for version, loader, model in WEBUI_VOCODERS if loads_global(source.function(loader), model))
    missing = [] if vocoders else [f"{loader}() loading the global {model}" for _, loader, model in WEBUI_VOCODERS]
    names = source.module_names()
    return missing + [name for name in WEBUI_NAMES if name not in names], vocoders


def loads_global(function: Optional[ast.FunctionDef], name: str) -> bool:
    return accepts(function, (), method=False) and any(
        isinstance(node, ast.Global) and name in node.names for node in ast.walk(function))


def streaming_kind(source: Source) -> str:
    """How api_v2.py takes streaming_mode: "modes" where it compares it with 2 or 3, "bool" where it
    only reads it, "" where it never mentions it."""
    tree = source.tree or ast.Module(body=[])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "streaming_mode"
                and any(isinstance(c, ast.Constant) and c.value in (2, 3) and c.value is not True
                        for c in node.comparators)):
            return "modes"
    mentioned = any(isinstance(node, ast.Constant) and node.value == "streaming_mode" for node in ast.walk(tree))
    return "bool" if mentioned else ""


def where(name: str, missing: list[str]) -> list[str]:
    return [f"{what} ({name})" for what in missing]


def check(root: Path, entry: str) -> Revision:
    """What entry point `entry` ("api", "webui-parallel", "webui") of the GPT-SoVITS in `root` offers.
    A folder without the entry script is a user error (the launcher started in the wrong place)."""
    script = ENTRY_SCRIPTS[entry]
    if not (root / script).is_file():
        raise UserError(f"{root} is not a GPT-SoVITS folder ({script} not found); start the launcher "
                        "from the folder that holds api_v2.py and GPT_SoVITS\\")
    entry_source = Source(root, script)
    if entry_source.tree is None:
        return Revision(script, (f"Python this interpreter can read ({script})",), (), "")
    if entry == "webui":
        missing, vocoders = webui_missing(entry_source)
        return Revision(script, tuple(where(script, missing)), vocoders, "")
    missing = [] if entry_source.imports_from(TTS_MODULES, "TTS") else where(script, ["from TTS_infer_pack.TTS import TTS"])
    missing += where(TTS_FILE, tts_file_missing(Source(root, TTS_FILE)))
    missing += where(MODELS_FILE, models_file_missing(Source(root, MODELS_FILE)))
    streaming = streaming_kind(entry_source) if entry == "api" else ""
    return Revision(script, tuple(missing), () if missing else VOCODERS, streaming)
