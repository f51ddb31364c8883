"""pipeline.toml tells the truth: every key in it is read by the code, the code keeps no second
default for any of them, and the vocoder pair is written out in one place only."""
from __future__ import annotations

import ast
import copy
import tomllib
from pathlib import Path
from typing import Any, Iterator

import pytest

from build.config import build_config
from pipeline.errors import UserError
from pipeline.settings import CONFIG_PATH, REPO_ROOT, VOCODERS, load_settings

# the folders whose code reads pipeline.toml (the runtime never does: it trusts the manifest)
STAGES = ("pipeline", "export", "build", "validate", "serving")


def string_literals(folders: tuple[str, ...]) -> set[str]:
    """Every string constant in the folders' Python files, exactly as written (no substrings)."""
    found = set()
    for folder in folders:
        for source in sorted((REPO_ROOT / folder).rglob("*.py")):
            tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
            found |= {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    return found


def key_paths(table: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of every leaf key, descending into tables and arrays of tables."""
    for key, value in table.items():
        path = (*prefix, key)
        if isinstance(value, dict):
            yield from key_paths(value, path)
        elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            for item in value:
                yield from key_paths(item, path)
        else:
            yield path


def unread_keys(settings: dict[str, Any], literals: set[str]) -> list[str]:
    """Keys of `settings` the code never names. A table keyed by vocoder or precision name (such as
    [precisions.fp16] or verify_frames.v3) is read when its parent is: the code indexes it by a variable."""
    variable = set(VOCODERS) | set(settings.get("precisions", {}))
    unread = {".".join(path) for path in key_paths(settings)
              if any(part not in literals and part not in variable for part in path)}
    return sorted(unread)


def unread_in_pipeline_toml() -> list[str]:
    return unread_keys(tomllib.loads(CONFIG_PATH.read_text(encoding="utf-8")), string_literals(STAGES))


def test_every_key_of_pipeline_toml_is_read():
    assert unread_in_pipeline_toml() == []


def test_the_scan_sees_an_unread_key_and_a_read_one():
    """The check above can fail: a planted key is reported, in a table of its own or beside read ones."""
    settings = {"build": {"workspace_gib": 4.0, "planted_key": 1}, "planted_table": {"workspace_gib": 1},
                "precisions": {"fp16": {"cosine_min": 0.9}}, "clean": {"verify_frames": {VOCODERS[0]: [1]}}}
    literals = string_literals(STAGES)
    assert unread_keys(settings, literals) == ["build.planted_key", "planted_table.workspace_gib"]


def test_a_missing_key_is_one_line_naming_it():
    settings = copy.deepcopy(load_settings())
    del settings["build"]["workspace_gib"]
    with pytest.raises(UserError, match=r"\[build\] workspace_gib is missing; add it back") as error:
        build_config(settings)
    assert "\n" not in str(error.value)
    del settings["validate"]
    with pytest.raises(UserError, match=r"\[validate\] is missing;"):
        settings["validate"]["compare_frames"]


def test_the_vocoder_pair_is_written_out_once():
    """("v3", "v4") as a tuple or list literal appears only where VOCODERS is defined."""
    owner = REPO_ROOT / "pipeline" / "schema.py"
    places = []
    for folder in (*STAGES, "runtime", "tests"):
        for source in sorted((REPO_ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
                if (isinstance(node, (ast.Tuple, ast.List)) and len(node.elts) > 1
                        and all(isinstance(e, ast.Constant) and e.value in VOCODERS for e in node.elts)):
                    places.append(f"{source.relative_to(REPO_ROOT)}:{node.lineno}")
    assert [place for place in places if not place.startswith(str(owner.relative_to(REPO_ROOT)))] == []
    assert len(places) == 1


def test_a_former_key_is_read_under_its_new_name_with_one_warning(tmp_path: Path, caplog):
    """[clean] plan_frames and plan_margin_db (before the precision search had its own words) still
    load; a file with a key under both names is refused."""
    text = CONFIG_PATH.read_text(encoding="utf-8")
    former = tmp_path / "pipeline.toml"
    former.write_text(text.replace("search_frames =", "plan_frames =").replace("search_margin_db =", "plan_margin_db ="),
                      encoding="utf-8")
    with caplog.at_level("WARNING", "pipeline"):
        settings = load_settings(former)
    assert settings["clean"]["search_frames"] == load_settings()["clean"]["search_frames"]
    assert "plan_frames" not in settings["clean"] and "plan_margin_db" not in settings["clean"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{former}: [clean] {old} is now {new}; rename it there (the old name will stop working)"
        for old, new in (("plan_frames", "search_frames"), ("plan_margin_db", "search_margin_db"))]
    both = tmp_path / "both.toml"
    both.write_text(text.replace("search_frames =", "plan_frames = [1]\nsearch_frames ="), encoding="utf-8")
    with pytest.raises(UserError, match=r"\[clean\] has both plan_frames and its new name search_frames; keep search_frames"):
        load_settings(both)


def test_load_settings_refuses_a_config_that_is_not_utf8(tmp_path: Path):
    bad = tmp_path / "pipeline.toml"
    bad.write_bytes(b"[tensors]\ninput = \"m\xe9l\"\n")
    with pytest.raises(UserError, match="not UTF-8"):
        load_settings(bad)
