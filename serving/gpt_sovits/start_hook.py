"""The usual GPT-SoVITS start with the drop-in: `python -m serving.gpt_sovits enable` and `disable`.

Users start GPT-SoVITS with `go-webui.bat` (`runtime\\python.exe -I webui.py zh_CN`), whose inference
tab starts `"<python>" -s GPT_SoVITS/inference_webui.py` (or inference_webui_fast.py) as a new
process, or with `python api_v2.py`. Nothing of this project is on those command lines, in their
environment or on their path; what every start of that Python does run first is the `.pth` files of
its site-packages (under -I and -s too). `enable` writes one of its own there (PTH_NAME; webui.py
rewrites `users.pth` on every start, so never that one):

- its one executable line compares the started script's file name with the entry scripts' names
  (launcher.ENTRY_POINTS, written in at `enable`); for any other program of that Python (webui.py
  itself, pip, the training scripts) that comparison is all it does;
- for an entry script it loads this file by its absolute path as the module MODULE_NAME (the
  project stays off sys.path; a second pass over the .pth, as a venv may make, finds the module
  loaded and does nothing) and calls `install`, which registers an audit hook;
- when Python is about to run the script (the `cpython.run_file` audit event: start-up done, every
  .pth processed, the script's folder on sys.path), the hook puts the project on sys.path and starts
  that entry point through the launcher, as `python -m serving.gpt_sovits webui|webui-parallel|api`
  does, then ends with SystemExit, so that Python's own exit follows (threads joined, atexit
  handlers, exit code) and the file is not run a second time;
- whatever fails before the script starts (the project moved, an import fails, the launcher refuses
  the folder) is one line on stderr, and GPT-SoVITS runs as it would without this project.

Why not let Python run the script itself after installing hooks: that serves api_v2.py and
inference_webui_fast.py (the TTS import hook), but inference_webui.py's vocoders are wrapped between
the definition of init_bigvgan/init_hifigan and their first call (launcher.run_script's two steps),
which, with Python running the file, needs a trace function called on every Python call until then.
Running the launcher at `cpython.run_file` keeps one path for the three entry points, the same as the
launcher command's, at no cost before or after.

This file runs inside GPT-SoVITS' Python (3.9+, Windows): the standard library only at import.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

PTH_NAME = "gsv_vocoder_trt_start.pth"
MODULE_NAME = "gsv_vocoder_trt_start"
MARKER = "# gsv-vocoder-trt start hook"
PREFIX = "[gsv-vocoder-trt]"
RUN_FILE = "cpython.run_file"


# --- inside GPT-SoVITS' process ---------------------------------------------------------------------

def install(project: str, pth: str) -> None:
    """Start the entry point through the launcher when Python is about to run it (once)."""
    state = {"done": False}

    def on_audit_event(event: str, args: tuple) -> None:
        if state["done"] or event != RUN_FILE:
            return
        state["done"] = True
        start(project, pth, os.fspath(args[0]))

    on_audit_event.__cantrace__ = True  # the application runs inside this call: debuggers may trace it
    sys.addaudithook(on_audit_event)


def start(project: str, pth: str, filename: str) -> None:
    """Run `filename`'s entry point through the launcher and exit; return (GPT-SoVITS then runs
    unchanged) when it is no entry point of a GPT-SoVITS folder or anything fails before it starts."""
    if not in_gpt_sovits_folder(filename):  # a script of that name elsewhere: not even the launcher's import
        return
    saved_path, saved_finders, main = list(sys.path), list(sys.meta_path), sys.modules.get("__main__")
    try:
        sys.path.insert(0, project)
        entry = entry_point(filename)
        if entry is None:
            sys.path[:] = saved_path
            return
        run_entry(*entry, pth)
    except Exception as error:
        if sys.modules.get("__main__") is not main:  # the script had started: the error is its own
            raise_as_launcher(error)
        sys.path[:], sys.meta_path[:] = saved_path, saved_finders
        say(f"{PREFIX} not attached, GPT-SoVITS starts with its own vocoder: {reason(error)}")
        return
    raise SystemExit(0)


def in_gpt_sovits_folder(filename: str) -> bool:
    """Whether the script's folder, or the one above it, holds GPT-SoVITS' GPT_SoVITS folder."""
    folder = os.path.dirname(os.path.abspath(filename))
    return any(os.path.isdir(os.path.join(place, "GPT_SoVITS")) for place in (folder, os.path.dirname(folder)))


def entry_scripts() -> dict[str, str]:
    """The launcher's entry points: name ("webui", "webui-parallel", "api") -> script, relative to the
    GPT-SoVITS folder."""
    from serving.gpt_sovits.revision import ENTRY_SCRIPTS

    return dict(ENTRY_SCRIPTS)


def entry_point(filename: str):
    """(launcher entry name, GPT-SoVITS folder) of the script `filename`, or None."""
    path = os.path.abspath(filename)
    for name, script in entry_scripts().items():
        parts = script.split("/")
        root = path
        for _ in parts:
            root = os.path.dirname(root)
        same = os.path.normcase(os.path.join(root, *parts)) == os.path.normcase(path)  # Windows: any case
        if same and os.path.isdir(os.path.join(root, "GPT_SoVITS")):
            return name, root
    return None


def run_entry(name: str, root: str, pth: str) -> None:
    import logging

    from serving.gpt_sovits.launcher import console_handler, launch

    console_handler()
    logging.getLogger("serving").info("%s started through %s (`python -m serving.gpt_sovits disable` removes it)",
                                      entry_scripts()[name], pth)
    launch(name, sys.argv[1:], root=Path(root))


def raise_as_launcher(error: Exception) -> None:
    """An error once the script runs: a user error as the launcher command gives it (one line, exit
    code 2), any other as Python would (its traceback, exit code 1)."""
    from runtime.errors import EXIT_USER_ERROR, RuntimeUserError, one_line

    if isinstance(error, RuntimeUserError):
        say(f"error: {one_line(error, limit=None)}")
        raise SystemExit(EXIT_USER_ERROR) from None
    raise error


def say(line: str) -> None:
    """One line on stderr, where there is one (pythonw.exe has none)."""
    if sys.stderr is not None:
        sys.stderr.write(line + "\n")


def reason(error: Exception) -> str:
    """A user error's message (it names the problem and the fix); any other error with its type."""
    text = " ".join(str(error).split())
    user = any(cls.__name__ == "RuntimeUserError" for cls in type(error).__mro__)  # runtime.errors may not import
    return text if user else f"{type(error).__name__}: {text}"


# --- enable and disable: the .pth file ----------------------------------------------------------------

def pth_text(project: Path, pth: Path, script_names: tuple[str, ...]) -> str:
    """The .pth: two comment lines, then the one line site executes. ASCII only (every literal through
    `ascii()`): site reads a .pth in the locale's code page up to Python 3.12."""
    hook = project / "serving" / "gpt_sovits" / "start_hook.py"
    was_at, delete = (str(path).replace("%", "%%") for path in (project, pth))
    moved = (f"{PREFIX} not attached, GPT-SoVITS starts with its own vocoder: %s: %s (this project was at "
             f"{was_at}; run `python -m serving.gpt_sovits enable` from where it is now, or delete {delete})\n")
    boot = ("try:\n"
            " import importlib.util as u\n"
            f" s = u.spec_from_file_location({ascii(MODULE_NAME)}, {ascii(str(hook))})\n"
            " m = u.module_from_spec(s)\n"
            " sys.modules[s.name] = m\n"
            " s.loader.exec_module(m)\n"
            f" m.install({ascii(str(project))}, {ascii(str(pth))})\n"
            "except Exception as e:\n"
            f" sys.stderr and sys.stderr.write({ascii(moved)} % (type(e).__name__, e))\n")
    started = "(getattr(sys, 'argv', None) or [''])[0].replace(chr(92), '/').rsplit('/', 1)[-1].lower()"
    line = (f"import sys; exec({ascii(boot)}, {{'sys': sys}}) if {ascii(MODULE_NAME)} not in sys.modules "
            f"and {started} in {ascii(script_names)} else None")
    return (f"{MARKER}: GPT-SoVITS' {', '.join(script_names)} start with the vocoder drop-in of "
            f"{ascii(str(project))}.\n"
            "# Written by `python -m serving.gpt_sovits enable`; `python -m serving.gpt_sovits disable` removes it.\n"
            f"{line}\n")


def enable(gpt_sovits: Path, project: Path) -> Path:
    """Write the .pth into the site-packages of the Python running this (GPT-SoVITS' own), for the
    GPT-SoVITS folder `gpt_sovits`; returns its path."""
    from pipeline.files import atomic_output

    scripts = list(entry_scripts().values())
    if not any((gpt_sovits / script).is_file() for script in scripts):
        raise user_error(f"{gpt_sovits} is not a GPT-SoVITS folder (none of {', '.join(scripts)} found); run enable "
                         "from the folder that holds api_v2.py and GPT_SoVITS, with GPT-SoVITS' own Python "
                         "(runtime\\python.exe in the Windows bundle)")
    folder = site_packages()
    pth = folder / PTH_NAME
    names = tuple(sorted({script.rsplit("/", 1)[-1].lower() for script in scripts}))
    with atomic_output(pth, inputs=[Path(__file__)]) as tmp:
        tmp.write_bytes(pth_text(project, pth, names).encode("ascii"))
    return pth


def disable() -> Path | None:
    """Remove the .pth `enable` wrote into this Python's site-packages; returns its path, or None when
    there is none. A file of that name that `enable` did not write is refused, untouched."""
    for folder in site_folders():
        pth = folder / PTH_NAME
        if not pth.is_file():
            continue
        with open(pth, "rb") as stream:
            first = stream.readline()
        if not first.startswith(MARKER.encode("ascii")):
            raise user_error(f"{pth} was not written by `python -m serving.gpt_sovits enable` (its first line is "
                             "not this project's); left as it is: remove it yourself if it should go")
        try:
            pth.unlink()
        except OSError as error:
            raise user_error(f"cannot remove {pth}: {error.strerror}; run disable as a user who may write "
                             f"{folder}") from None
        return pth
    return None


def site_folders() -> list[Path]:
    """The site-packages folders this Python processes .pth files of at start (existing ones)."""
    import site

    listed = site.getsitepackages() if hasattr(site, "getsitepackages") else []
    return [Path(p) for p in listed if "packages" in Path(p).name and Path(p).is_dir()]


def site_packages() -> Path:
    """The first of them, which must be writable (GPT-SoVITS' webui.py picks it the same way)."""
    folders = site_folders()
    if not folders:
        raise user_error(f"this Python ({sys.executable}) has no site-packages folder to put the start hook in; "
                         "run enable with the Python that starts GPT-SoVITS (runtime\\python.exe in the Windows bundle)")
    if not os.access(folders[0], os.W_OK):
        raise user_error(f"{folders[0]} (this Python's site-packages) is not writable; run enable as a user who "
                         "may write there, with the Python that starts GPT-SoVITS")
    return folders[0]


def user_error(message: str) -> Exception:
    from pipeline.errors import UserError

    return UserError(message)
