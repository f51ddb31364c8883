"""tests/gsv_real.py's stubs and engine double in a GPT-SoVITS inference process that webui.py started
(tests/test_start_hook.py), where the test cannot reach in: the test's throwaway venv holds a .pth
that loads this file, by path, in every process whose script is one of GPT-SoVITS' entry points.

Its audit hook is registered before the start hook's (its .pth sorts first), so at `cpython.run_file`
it runs first: the stubs (the text front end, BERT, cnhubert, the UI packages), plans read from
GSV_START_ENGINES, `runtime.load_engine` giving the engine double; then the start hook attaches the
drop-in. At exit it writes what serves to GSV_START_REPORT, with the sys.path
this process had before any hook ran (the project must not be on it).
"""
from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ENTRIES = {"inference_webui.py": "webui", "inference_webui_fast.py": "webui-parallel", "api_v2.py": "api"}


def install() -> None:
    path_at_start = list(sys.path)

    def on_audit_event(event, args):
        if event == "cpython.run_file" and not getattr(on_audit_event, "done", False):
            on_audit_event.done = True
            attach_doubles(path_at_start)

    sys.addaudithook(on_audit_event)


def attach_doubles(path_at_start: list[str]) -> None:
    sys.path.extend([str(TESTS), str(TESTS.parent)])  # after the start hook's own entry: it comes first
    import gsv_real
    import pipeline.settings
    import runtime

    gsv_real.install_stubs(Path.cwd())
    load_settings = pipeline.settings.load_settings

    def settings_with_test_engines(*args, **kwargs):
        settings = load_settings(*args, **kwargs)
        settings["paths"]["engines"] = os.environ["GSV_START_ENGINES"]
        return settings

    pipeline.settings.load_settings = settings_with_test_engines
    runtime.load_engine = lambda plan, device=0: gsv_real.EngineDouble(plan, device)
    atexit.register(write_report, path_at_start)


def write_report(path_at_start: list[str]) -> None:
    entry = ENTRIES[Path(sys.argv[0]).name]
    report = served(entry, vars(sys.modules["__main__"]))
    report.update(entry=entry, argv=sys.argv, path_at_start=path_at_start,
                  start_hook_loaded="gsv_vocoder_trt_start" in sys.modules)
    Path(os.environ["GSV_START_REPORT"]).write_text(json.dumps(report), encoding="utf-8")


def served(entry: str, namespace: dict) -> dict:
    """What serves, as tests/gsv_launch.py reports it (inference_webui.py: each vocoder at start and
    after a switch to the other; the TTS entry points: the TTS's vocoder and whether TTS.run is the
    launcher's), and whether the (stubbed) server started."""
    from gsv_launch import started, tts_report, webui_report

    report = webui_report(namespace) if entry == "webui" else tts_report(namespace)
    return {**report, "server_started": bool(started(entry))}
