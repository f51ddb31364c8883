"""What pipeline.toml may hold: every table and key with its type and range, checked once, whole, at
load (pipeline/settings.py), so each command refuses a bad value in one line before any work.

The spec types below also check the `tensorrt:` section of GPT-SoVITS' tts_infer.yaml
(serving/gpt_sovits/options.py). A value is never rendered whole in a message (`shown`): a
container is named by its length, a long string or integer is cut, so a hostile value costs nothing
to describe. Sizes are bounded by runtime/limits.py, the one place that holds them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from pipeline.errors import UserError
from runtime.files import SAFE_NAME
from runtime.limits import MAX_BATCH, MAX_FRAMES, MAX_N_MELS
from runtime.manifest import HARDWARE_COMPATIBILITY, KERNEL_SPECIALIZATIONS
from runtime.runnable import BACKENDS
from runtime.targets import RTX_TARGET_SETS, parse_sm

log = logging.getLogger("pipeline")

SHOWN_CHARACTERS = 40
MISSING = "is missing; add it back (the repository's pipeline.toml has every key)"
# The vocoders the code is written for (vocoder_models/vocoders.py builds exactly these two): architecture,
# not configuration, so not a key of pipeline.toml; its per-vocoder tables have exactly these keys.
# Every --vocoder choice and v3/v4 loop uses this (pipeline/settings.py's VOCODERS).
VOCODERS = ("v3", "v4")


class Invalid(Exception):
    """One value refused: where it is (key path) and what is wrong with it, fix included."""

    def __init__(self, path: Tuple[Any, ...], problem: str):
        super().__init__(problem)
        self.path, self.problem = path, problem


def shown(value: Any) -> str:
    """A value as a message names it, in bounded time and length whatever it is."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 64 else f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        cut = value[:SHOWN_CHARACTERS]
        return f"the text {cut!r}" + ("..." if len(value) > SHOWN_CHARACTERS else "")
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, Mapping):
        return f"a table of {len(value)} key{'' if len(value) == 1 else 's'}"
    if value is None:
        return "empty (null)"
    return f"a {type(value).__name__}"


def where(path: Sequence[Any]) -> str:
    """("build", "workspace_gib") -> "[build] workspace_gib"; list items as [index]."""
    parts: list = []
    for part in path:
        if isinstance(part, int) and parts:
            parts[-1] += f"[{part}]"
        else:
            parts.append(str(part))
    if len(parts) < 2:
        return f"[{parts[0]}]" if parts else "the file"
    return f"[{'.'.join(parts[:-1])}] {parts[-1]}"


def _is_number(value: Any, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, (int, float))


@dataclass(frozen=True)
class Number:
    """An integer (integer=True) or a number in low..high (low excluded when above=True). NaN and
    infinities fall outside every range, booleans are not numbers, and 4.0 is not an integer."""

    low: float
    high: float
    integer: bool = False
    above: bool = False
    note: str = ""  # where the range comes from, said in the message

    def check(self, value: Any, path: Tuple[Any, ...]) -> None:
        if not _is_number(value, self.integer) or not self._inside(value):
            raise Invalid(path, f"is {shown(value)}; use {self.expected()}")

    def _inside(self, value) -> bool:
        return (self.low < value if self.above else self.low <= value) and value <= self.high

    def expected(self) -> str:
        kind = "an integer" if self.integer else "a number"
        low = f"above {_figure(self.low)} and at most" if self.above else f"from {_figure(self.low)} to"
        return f"{kind} {low} {_figure(self.high)}" + (f" ({self.note})" if self.note else "")


def _figure(bound: float) -> str:
    """A range's bound as written in pipeline.toml: 10000000, not 1e+07."""
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


@dataclass(frozen=True)
class Choice:
    """One of a few words."""

    options: Tuple[str, ...]

    def check(self, value: Any, path: Tuple[Any, ...]) -> None:
        if not isinstance(value, str) or value not in self.options:
            raise Invalid(path, f"is {shown(value)}; use one of {', '.join(self.options)}")


@dataclass(frozen=True)
class Text:
    """A non-empty string (a name, a path, an executable); `name`: a plain file-name part."""

    name: bool = False

    def check(self, value: Any, path: Tuple[Any, ...]) -> None:
        if not isinstance(value, str) or not value.strip() or (self.name and not SAFE_NAME.fullmatch(value)):
            plain = "a plain name of letters, digits, _ . -" if self.name else "a non-empty string in quotes"
            raise Invalid(path, f"is {shown(value)}; use {plain}")


@dataclass(frozen=True)
class Flag:
    def check(self, value: Any, path: Tuple[Any, ...]) -> None:
        if not isinstance(value, bool):
            raise Invalid(path, f"is {shown(value)}; use true or false, without quotes")


@dataclass(frozen=True)
class Rule:
    """A value `test` accepts (a check no simple type says), described by `expected`."""

    test: Callable[[Any], bool]
    expected: str

    def check(self, value: Any, path: Tuple[Any, ...]) -> None:
        if not self.test(value):
            raise Invalid(path, f"is {shown(value)}; use {self.expected}")


@dataclass(frozen=True)
class ListOf:
    """A list of `least`..`most` items, each checked by `item`; `rule`: a check of the whole list
    once its items pass (None: the list is fine, else the problem and its fix)."""

    item: Any
    least: int = 1
    most: int = 64
    rule: Optional[Callable[[list], Optional[str]]] = None

    def check(self, value: Any, path: Tuple[Any, ...]) -> None:
        if not isinstance(value, list) or not self.least <= len(value) <= self.most:
            raise Invalid(path, f"is {shown(value)}; use a list of {self.least} to {self.most} items")
        for index, item in enumerate(value):
            self.item.check(item, (*path, index))
        problem = self.rule(value) if self.rule else None
        if problem:
            raise Invalid(path, problem)


@dataclass(frozen=True)
class Pair:
    """A list of exactly two values, each checked by its own spec ([batch, frames], [n_fft, hop])."""

    first: Any
    second: Any

    def check(self, value: Any, path: Tuple[Any, ...]) -> None:
        if not isinstance(value, list) or len(value) != 2:
            raise Invalid(path, f"is {shown(value)}; use a list of two")
        self.first.check(value[0], (*path, 0))
        self.second.check(value[1], (*path, 1))


@dataclass(frozen=True)
class Table:
    """A table of known keys: each checked by its spec, none missing (but `optional`), none unknown.
    `names`: the spec of every key instead, for a table whose keys are the user's names."""

    keys: Dict[str, Any] = field(default_factory=dict)
    optional: Tuple[str, ...] = ()
    names: Optional[Tuple[Any, Any]] = None  # (key spec, value spec)

    def check(self, value: Any, path: Tuple[Any, ...]) -> None:
        if not isinstance(value, Mapping):
            raise Invalid(path, f"is {shown(value)}; it must be a table of keys")
        if self.names is not None:
            return self._check_named(value, path)
        unknown = [key for key in value if key not in self.keys]
        if unknown:
            name = str(unknown[0])[:SHOWN_CHARACTERS]
            raise Invalid(path, f"has the unknown key {name!r}{' (and more)' if len(unknown) > 1 else ''}; "
                                f"check its spelling (known: {', '.join(self.keys)})")
        for key, spec in self.keys.items():
            if key in value:
                spec.check(value[key], (*path, key))
            elif key not in self.optional:
                raise Invalid((*path, key), MISSING)

    def _check_named(self, value: Mapping, path: Tuple[Any, ...]) -> None:
        key_spec, value_spec = self.names
        if not value:
            raise Invalid(path, "is empty; define at least one")
        for key, item in value.items():
            key_spec.check(key, (*path, key))
            value_spec.check(item, (*path, key))


def missing(source: str, path: Tuple[Any, ...]) -> UserError:
    """A key the file lacks, found by the schema at load or when the code asks for it."""
    return UserError(f"{source}: {where(path)} {MISSING}")


def checked(spec: Any, value: Any, source: str, name: Callable[[Sequence[Any]], str] = where) -> Any:
    """`value` when `spec` accepts it, else one UserError line: source, key (as `name` writes its
    path) and the fix."""
    try:
        spec.check(value, ())
    except Invalid as invalid:
        raise UserError(f"{source}: {name(invalid.path)} {invalid.problem}") from None
    return value


# ---- pipeline.toml ------------------------------------------------------------------------------

SEED = Number(0, 2 ** 32 - 1, integer=True)
FRAMES = Number(1, MAX_FRAMES, integer=True, note="runtime/limits.py MAX_FRAMES")
BATCH = Number(1, MAX_BATCH, integer=True, note="runtime/limits.py MAX_BATCH")
FRAME_LIST = ListOf(FRAMES)
PAIR = Pair(BATCH, FRAMES)  # [batch, frames]
TOLERANCE = Number(0, 1, above=True)
DECIBELS = Number(-300, 300)
COSINE = Number(-1, 1)
COUNT = Number(1, 1_000_000, integer=True)
WORKSPACE_GIB = Number(0, 1024, above=True, note="GiB")
PATH = Text()


def _ordered(profile: Mapping) -> Optional[str]:
    """min <= opt <= max on each axis."""
    for axis, label in enumerate(("batch", "frames")):
        low, opt, high = (profile[key][axis] for key in ("min", "opt", "max"))
        if not low <= opt <= high:
            return f"{label} must satisfy min <= opt <= max, got {low}, {opt}, {high}; fix pipeline.toml"
    return None


@dataclass(frozen=True)
class Profile(Table):
    """One optimization profile: its keys, then min <= opt <= max."""

    def check(self, value: Any, path: Tuple[Any, ...]) -> None:
        super().check(value, path)
        problem = _ordered(value)
        if problem:
            raise Invalid(path, f"(profile {value['name']!r}) {problem}")


def _distinct_names(profiles: list) -> Optional[str]:
    names = [profile["name"] for profile in profiles]
    twice = next((name for name in names if names.count(name) > 1), None)
    return f"defines the profile {twice!r} twice; give each profile its own name" if twice else None


PROFILE = Profile({"name": Text(name=True), "min": PAIR, "opt": PAIR, "max": PAIR})


def per_vocoder(spec: Any) -> Table:
    """A table with one key per vocoder, each checked by `spec`."""
    return Table({vocoder: spec for vocoder in VOCODERS})


TARGETS = Rule(lambda v: v in RTX_TARGET_SETS or (isinstance(v, list) and 0 < len(v) <= 64 and all(parse_sm(t) for t in v)),
               '"portable", "all" or a list like ["SM86", "SM89"]')
BACKEND_CHOICES = ("auto", *BACKENDS)  # [build] backend and `python -m build --backend`
TORCH_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
TRITON_INSTANCE_KINDS = ("KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL")  # Triton's ModelInstanceGroup.Kind

PRECISION = Table({"onnx_type": Choice(("float32", "float16")), "cosine_min": COSINE, "snr_min_db": DECIBELS},
                  optional=("cosine_min", "snr_min_db"))

SCHEMA = Table({
    "tensors": Table({"input": Text(name=True), "output": Text(name=True)}),
    "paths": Table({"engines": PATH, "onnx": PATH, "timing_cache": PATH}),
    "export": Table({
        "opset": Number(7, 23, integer=True, note="the ONNX opsets torch exports"), "synthetic_seed": SEED,
        "stress_seed": SEED, "parity_rel_tol": TOLERANCE, "parity_noise_margin": Number(1, 1e6),
        "verify_cases": ListOf(PAIR, most=16), "mel_seed": SEED}),
    "clean": Table({
        "parity_rel_tol": TOLERANCE, "parity_frames": FRAMES, "mel_seed": SEED, "study_frames": FRAMES,
        "search_frames": FRAME_LIST, "search_margin_db": Number(0, 100), "verify_frames": per_vocoder(FRAME_LIST),
        "report_layers": COUNT, "min_fp16_mac_share": Number(0, 1)}),
    "precisions": Table(names=(Text(name=True), PRECISION)),
    "validate": Table({
        "layer_rel_tol": TOLERANCE, "output_rel_tol": TOLERANCE, "compare_frames": FRAMES, "layer_frames": FRAMES,
        "compare_inputs": COUNT, "worst_layers": COUNT, "artifacts": PATH, "cosine_min": COSINE, "snr_min_db": DECIBELS,
        "stft_resolutions": ListOf(Pair(Number(2, 1 << 20, integer=True), Number(1, 1 << 20, integer=True))),
        "stft_mels": Number(1, MAX_N_MELS, integer=True), "bench_frames": FRAME_LIST, "bench_batches": ListOf(BATCH),
        "bench_warmup": Number(0, 1_000_000, integer=True), "bench_runs": COUNT, "bench_min_runs": COUNT,
        "bench_row_seconds": Number(0, 86400, above=True), "bench_compile_mode": Choice(TORCH_COMPILE_MODES),
        "bench_compile_sizes": ListOf(PAIR, least=0),
        "ort_cudnn_conv_algo_search": Choice(("EXHAUSTIVE", "HEURISTIC", "DEFAULT")),
        "bench_cpu_frames": FRAME_LIST, "bench_cpu_batches": ListOf(BATCH), "report_precision": Text(name=True),
        "report_inputs": COUNT, "report_frames": FRAMES}),
    "build": Table({
        "backend": Choice(BACKEND_CHOICES), "workspace_gib": WORKSPACE_GIB,
        "optimization_level": Number(0, 5, integer=True), "rtx_compute_capabilities": TARGETS,
        "rtx_kernel_specialization": Choice(KERNEL_SPECIALIZATIONS), "hardware_compatibility": Choice(HARDWARE_COMPATIBILITY),
        "version_compatible": Flag(), "trtexec": Text()}),
    "profiles": per_vocoder(ListOf(PROFILE, most=16, rule=_distinct_names)),
    "serving": Table({
        "triton_repository": PATH, "dynamic_batching": Flag(), "preferred_batch_sizes": ListOf(BATCH, least=0),
        "max_queue_delay_microseconds": Number(0, 60_000_000, integer=True, note="at most a minute"),
        "instance_count": Number(1, 64, integer=True), "instance_kind": Choice(TRITON_INSTANCE_KINDS),
        "gpt_sovits": Table({"checkpoints": per_vocoder(PATH), "stats_window": COUNT,
                             "proof_frames": per_vocoder(FRAMES), "proof_seed": SEED})}),
    "stream": Table({"snr_min_db": DECIBELS}),
})


# keys that had another name: (table, former name) -> the name now. A file with a former name is
# read as the new one, with one warning naming it; a file with both is refused.
FORMER_KEYS = {("clean", "plan_frames"): "search_frames", ("clean", "plan_margin_db"): "search_margin_db"}


def renamed_keys(settings: Dict[str, Any], source: str) -> Dict[str, Any]:
    """`settings` (as parsed) with each former key of FORMER_KEYS moved to its new name."""
    for (table, former), name in FORMER_KEYS.items():
        section = settings.get(table)
        if not isinstance(section, dict) or former not in section:
            continue
        if name in section:
            raise UserError(f"{source}: [{table}] has both {former} and its new name {name}; keep {name} only")
        log.warning("%s: [%s] %s is now %s; rename it there (the old name will stop working)", source, table, former, name)
        section[name] = section.pop(former)
    return settings


def check_settings(settings: Mapping[str, Any], source: str) -> None:
    """The whole file against SCHEMA, then what one key says of another: the precision the report
    uses is one the file defines."""
    checked(SCHEMA, settings, source)
    report = settings["validate"]["report_precision"]
    if report not in settings["precisions"]:
        raise UserError(f"{source}: [validate] report_precision is {shown(report)}, not a precision of [precisions]; "
                        f"use one of {', '.join(settings['precisions'])}")


def check_part(settings: Mapping[str, Any], *path: str) -> None:
    """One table (`path`, e.g. "build") of settings a caller made by hand, against its part of SCHEMA."""
    spec, value = SCHEMA, settings
    try:
        for depth, key in enumerate(path):
            if not isinstance(value, Mapping) or key not in value:
                raise Invalid(path[:depth + 1], MISSING)
            spec, value = spec.keys[key], value[key]
        spec.check(value, path)
    except Invalid as invalid:
        raise UserError(f"pipeline.toml: {where(invalid.path)} {invalid.problem}") from None
