"""python -m serving.gpt_sovits webui|webui-parallel|api [GPT-SoVITS' own arguments]
python -m serving.gpt_sovits build [--vocoders v3 v4] [--precisions fp16 fp32]
python -m serving.gpt_sovits enable|disable

Run from the GPT-SoVITS folder with GPT-SoVITS' Python (`runtime\\python.exe` in the Windows bundle).
The first three start GPT-SoVITS' own inference_webui.py, inference_webui_fast.py or api_v2.py with
the TensorRT vocoder drop-in attached (serving/gpt_sovits/launcher.py), or unchanged with one line
where this revision lacks what the drop-in relies on (serving/gpt_sovits/revision.py); everything
after the name goes to GPT-SoVITS unchanged. `--any-revision` is accepted and does nothing (every
revision is checked by what its code has). `build` makes the engines for the vocoder checkpoints
this GPT-SoVITS loads (export, clean, build: the commands `make engines` runs), with a progress bar.
`webui-parallel` is GPT-SoVITS' "parallel inference" UI; its former name here, `webui-fast`, is
still accepted with one line naming the new one.
`enable` puts a start hook into this Python's site-packages, so that GPT-SoVITS' usual start (go-webui.bat,
api_v2.py) attaches the drop-in too; `disable` removes it (serving/gpt_sovits/start_hook.py).
"""
from __future__ import annotations

import sys

from runtime.errors import EXIT_USER_ERROR, RuntimeUserError, one_line

USAGE = ("usage: python -m serving.gpt_sovits webui|webui-parallel|api [GPT-SoVITS arguments]\n"
         "       python -m serving.gpt_sovits build [--vocoders v3 v4] [--precisions fp16 fp32]\n"
         "       python -m serving.gpt_sovits enable|disable   (the start hook for go-webui.bat and api_v2.py)")
FORMER_NAMES = {"webui-fast": "webui-parallel"}  # entry point names this command had before, and what they are now


def main(argv=None) -> int:
    from pipeline.errors import UserError
    from serving.gpt_sovits.launcher import launch
    from serving.gpt_sovits.revision import ENTRY_SCRIPTS

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--any-revision"]:
        print("--any-revision is no longer needed and does nothing: the launcher reads what each revision's "
              "code has, and starts GPT-SoVITS unchanged where the drop-in cannot attach", file=sys.stderr)
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name in FORMER_NAMES:
        print(f"{name} is now {FORMER_NAMES[name]}; the old name will be removed", file=sys.stderr)
        name = FORMER_NAMES[name]
    if name == "build":
        from serving.gpt_sovits.bundle_build import main as build_main

        return build_main(rest)
    if name in ("enable", "disable"):
        return start_hook_command(name, rest)
    if name not in ENTRY_SCRIPTS:
        raise UserError(f"unknown entry point {name!r}; use one of {', '.join(ENTRY_SCRIPTS)}, build, enable or disable")
    launch(name, rest)
    return 0


def start_hook_command(name: str, rest: list[str]) -> int:
    """`enable` or `disable`, each one line saying what was written or removed, and where."""
    from pathlib import Path

    from pipeline.errors import UserError
    from pipeline.settings import REPO_ROOT
    from serving.gpt_sovits import start_hook

    if rest:
        raise UserError(f"{name} takes no arguments (got {' '.join(rest)}); run it from the GPT-SoVITS folder "
                        "with GPT-SoVITS' own Python")
    if name == "enable":
        pth = start_hook.enable(Path.cwd(), REPO_ROOT)
        print(f"enabled: wrote {pth}; GPT-SoVITS started by this Python (go-webui.bat's inference UIs, api_v2.py) "
              f"now serves its vocoders through the drop-in of {REPO_ROOT}; `python -m serving.gpt_sovits disable` "
              "removes it")
        return 0
    pth = start_hook.disable()
    print(f"disabled: removed {pth}; GPT-SoVITS starts with its own vocoder" if pth is not None else
          f"nothing to remove: no {start_hook.PTH_NAME} in this Python's site-packages "
          f"({', '.join(map(str, start_hook.site_folders())) or 'none'})")
    return 0


def run(argv=None) -> int:
    """`main` with a user error as one line and exit code 2, leaving logging to GPT-SoVITS (the drop-in's
    own lines reach the console through their own handler)."""
    try:
        return main(argv)
    except RuntimeUserError as error:
        print(f"error: {one_line(error, limit=None)}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(run())
