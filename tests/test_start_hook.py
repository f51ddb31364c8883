"""`python -m serving.gpt_sovits enable|disable`: the .pth start hook in GPT-SoVITS' own Python.

Each test makes a throwaway venv (`python -m venv --without-pip --system-site-packages`, well under a
second) whose site-packages is the one `enable` writes into; a `_project_venv.pth` there lets that
Python import this project's dependencies (torch, yaml...) but never this project itself: nothing of
it is on the path, the command line or the environment of what the venv's Python starts.

The first tests need no GPT-SoVITS code: the round trip, what a program that is no entry point sees,
and the soft failures (the project moved, an import fails). The last ones start GPT-SoVITS' real
webui.py the way go-webui.bat does, and its inference tab starts the inference UIs the way users get
them, at the revision GSV_SOURCE and GSV_REVISIONS name (48b1a01 among several); skipped without
GSV_SOURCE.
"""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import gsv_real
from serving.gpt_sovits import start_hook
from serving.gpt_sovits.revision import check

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
ENTRY_FAKE = "import sys\nprint('GPT-SoVITS ran', sys.argv[1:], 'serving' in sys.modules)\nsys.exit(int(sys.argv[1]))\n"


def venv(folder: Path) -> Path:
    """A throwaway venv; returns its site-packages. Its Python sees this test's third-party packages
    (the project's venv site-packages, and PYTHONPATH's folders other than this project's)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(folder)], check=True)
    packages = Path(subprocess.run([str(python_of(folder)), "-c", "import site; print(site.getsitepackages()[0])"],
                                   capture_output=True, check=True, encoding="utf-8").stdout.strip())
    others = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() not in (REPO, TESTS)]
    lines = [f"import site; site.addsitedir({ascii(p)})" for p in (*site.getsitepackages(), *others)]
    (packages / "_project_venv.pth").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return packages


def python_of(folder: Path) -> Path:
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def clean_env(**extra) -> dict:
    """This environment without anything that would put the project on a child's path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    return {**env, **extra}


def command(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m serving.gpt_sovits ARGS` as a user runs it: the project on PYTHONPATH, from `cwd`."""
    return subprocess.run([str(python), "-m", "serving.gpt_sovits", *args], cwd=cwd, capture_output=True,
                          encoding="utf-8", env=clean_env(PYTHONPATH=str(REPO)))


def in_process(monkeypatch, packages: Path, cwd: Path, *args: str) -> int:
    """The same command in this process (no second torch import), with `packages` as this Python's
    site-packages."""
    from serving.gpt_sovits.__main__ import run

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(site, "getsitepackages", lambda: [str(packages)])
    return run(list(args))


def fake_gpt_sovits(folder: Path) -> Path:
    """A folder shaped like GPT-SoVITS' (its entry scripts print and exit with their first argument)."""
    for script in ("api_v2.py", "GPT_SoVITS/inference_webui.py", "GPT_SoVITS/inference_webui_fast.py"):
        (folder / script).parent.mkdir(parents=True, exist_ok=True)
        (folder / script).write_text(ENTRY_FAKE, encoding="utf-8")
    return folder


@pytest.fixture
def hooked(tmp_path):
    """(venv python, its site-packages, a GPT-SoVITS-shaped folder), nothing enabled yet."""
    packages = venv(tmp_path / "venv")
    return python_of(tmp_path / "venv"), packages, fake_gpt_sovits(tmp_path / "GPT SoVITS ä")


def test_enable_then_disable_leaves_site_packages_as_it_was(hooked):
    python, packages, gpt_sovits = hooked
    before = sorted(p.name for p in packages.iterdir())
    enabled = command(python, "enable", cwd=gpt_sovits)
    pth = packages / start_hook.PTH_NAME
    assert enabled.returncode == 0, enabled.stderr
    assert enabled.stdout.splitlines() == [enabled.stdout.strip()] and f"wrote {pth}" in enabled.stdout
    assert sorted(p.name for p in packages.iterdir()) == sorted([*before, start_hook.PTH_NAME])  # no lock, no temporary
    text = pth.read_bytes()
    assert text.isascii() and text.startswith(start_hook.MARKER.encode())
    assert [line for line in text.decode().splitlines() if not line.startswith("#")][0].startswith("import sys;")
    disabled = command(python, "disable", cwd=gpt_sovits)
    assert disabled.returncode == 0 and disabled.stdout.strip() == \
        f"disabled: removed {pth}; GPT-SoVITS starts with its own vocoder"
    assert sorted(p.name for p in packages.iterdir()) == before



def test_disable_without_the_hook_says_so(monkeypatch, tmp_path, capsys):
    packages = tmp_path / "site-packages"
    packages.mkdir()
    assert in_process(monkeypatch, packages, tmp_path, "disable") == 0
    expected = f"nothing to remove: no {start_hook.PTH_NAME} in this Python's site-packages ({packages})\n"
    assert capsys.readouterr().out == expected


def test_enable_refuses_a_folder_that_is_not_gpt_sovits(monkeypatch, tmp_path, capsys):
    packages = tmp_path / "site-packages"
    packages.mkdir()
    assert in_process(monkeypatch, packages, tmp_path, "enable") == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and "not a GPT-SoVITS folder" in err
    assert list(packages.iterdir()) == []


def test_enable_refuses_a_python_without_site_packages(monkeypatch, tmp_path, capsys):
    assert in_process(monkeypatch, tmp_path / "missing" / "site-packages", fake_gpt_sovits(tmp_path), "enable") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: ") and "no site-packages folder" in error


def test_disable_leaves_a_file_of_that_name_it_did_not_write(monkeypatch, tmp_path, capsys):
    foreign = tmp_path / "site-packages" / start_hook.PTH_NAME
    foreign.parent.mkdir()
    foreign.write_text("/some/path\n", encoding="utf-8")
    assert in_process(monkeypatch, foreign.parent, tmp_path, "disable") == 2
    assert "was not written by" in capsys.readouterr().err and foreign.read_text(encoding="utf-8") == "/some/path\n"


def test_a_program_that_is_no_entry_point_is_untouched(hooked, monkeypatch):
    """webui.py itself, pip, training scripts: the hook's one line compares a name and stops there."""
    python, packages, gpt_sovits = hooked
    assert in_process(monkeypatch, packages, gpt_sovits, "enable") == 0
    probe = gpt_sovits / "webui.py"
    probe.write_text("import sys\nprint(sorted(m for m in sys.modules if 'gsv' in m or m.split('.')[0] == 'serving'),"
                     f" {str(REPO)!r} in sys.path)\n", encoding="utf-8")
    elsewhere = gpt_sovits.parent / "another program" / "api_v2.py"  # an entry script's name, no GPT-SoVITS around it
    elsewhere.parent.mkdir()
    shutil.copy(probe, elsewhere)
    loaded_by_name = "['gsv_vocoder_trt_start'] False\n"  # the hook module alone: no launcher, no project on the path
    for script, flags, seen in ((probe, ["-I"], "[] False\n"), (probe, ["-s"], "[] False\n"), (probe, [], "[] False\n"),
                                (elsewhere, [], loaded_by_name)):
        done = subprocess.run([str(python), *flags, script.name, "zh_CN"], cwd=script.parent, capture_output=True,
                              encoding="utf-8", env=clean_env())
        assert (done.returncode, done.stdout, done.stderr) == (0, seen, ""), script


def write_pth(packages: Path, project: Path) -> Path:
    pth = packages / start_hook.PTH_NAME
    pth.write_bytes(start_hook.pth_text(project, pth, ("api_v2.py", "inference_webui.py")).encode("ascii"))
    return pth


def run_entry(python: Path, gpt_sovits: Path, script: str, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-s", script, code], cwd=gpt_sovits, capture_output=True, encoding="utf-8",
                          env=clean_env())


def test_project_moved_starts_gpt_sovits_unchanged_with_one_line(hooked, tmp_path):
    python, packages, gpt_sovits = hooked
    gone = tmp_path / "moved away ü 张"
    pth = write_pth(packages, gone)
    assert pth.read_bytes().isascii()
    done = run_entry(python, gpt_sovits, "api_v2.py", "3")
    assert done.returncode == 3 and done.stdout == "GPT-SoVITS ran ['3'] False\n"
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("[gsv-vocoder-trt] not attached")
    assert f"this project was at {gone}" in done.stderr and f"delete {pth}" in done.stderr


def test_a_failing_import_starts_gpt_sovits_unchanged_with_one_line(hooked, tmp_path):
    """The hook file is there but the launcher is not: the import fails when the script is about to
    run; the script runs as without the hook, the project taken off sys.path again. A venv that
    processes the site-packages twice (here: a second pass by site.addsitedir) still gives one line."""
    python, packages, gpt_sovits = hooked
    partial = tmp_path / "partial copy"
    (partial / "serving" / "gpt_sovits").mkdir(parents=True)
    shutil.copy(REPO / "serving" / "gpt_sovits" / "start_hook.py", partial / "serving" / "gpt_sovits")
    write_pth(packages, partial)
    (packages / "zz_second_pass.pth").write_text(
        f"import sys, site; sys.__dict__.setdefault('second_pass', 0) or (setattr(sys, 'second_pass', 1), "
        f"site.addsitedir({str(packages)!r}))\n", encoding="utf-8")
    gpt_sovits.joinpath("GPT_SoVITS", "inference_webui.py").write_text(
        f"import sys\nprint({str(partial)!r} in sys.path, sys.second_pass)\n", encoding="utf-8")
    done = run_entry(python, gpt_sovits, "GPT_SoVITS/inference_webui.py", "0")
    assert done.returncode == 0 and done.stdout == "False 1\n", done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("[gsv-vocoder-trt] not attached, GPT-SoVITS starts with its own vocoder: "
                                  "ModuleNotFoundError: No module named 'serving.gpt_sovits.")  # the launcher's own


def test_a_gpt_sovits_the_launcher_refuses_still_starts(hooked, monkeypatch):
    """A GPT-SoVITS-shaped folder that is no revision the launcher knows: the script runs once, with
    its own exit code, after the launcher's line saying why the drop-in is not attached."""
    python, packages, gpt_sovits = hooked
    assert in_process(monkeypatch, packages, gpt_sovits, "enable") == 0
    done = run_entry(python, gpt_sovits, "GPT_SoVITS/inference_webui_fast.py", "3")
    assert done.returncode == 3 and done.stdout.count("GPT-SoVITS ran ['3']") == 1, done.stderr
    assert "Traceback" not in done.stderr and "[gsv-vocoder-trt]" in done.stderr
    print(done.stderr)


# --- GPT-SoVITS' real webui.py and inference UIs ------------------------------------------------------

@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A GPT-SoVITS folder (a copy of GSV_SOURCE's tree, 48b1a01 where it names several: webui.py
    starts the inference UIs from its own folder) with random weights and fp32 plans as
    tests/gsv_real.py makes them, and a throwaway venv as the bundle's runtime: `enable` run in it as
    users do, and a .pth loading tests/gsv_start_doubles.py into the entry-point processes. The
    model of each entry point: v4, or v3 where the revision has no v4 (20250228v3), and v2 for the
    TTS entry points where its TTS has no v3/v4 (they start unchanged there)."""
    labels = list(gsv_real.sources())
    if not labels:
        pytest.skip(gsv_real.SKIP_REASON)
    base = tmp_path_factory.mktemp("start-hook")
    label = "48b1a01" if "48b1a01" in labels else labels[-1]
    work = gsv_real.materialise(label, base / "GPT-SoVITS 张")
    vocoders = check(work, "webui").vocoders
    models = {"webui": "v4" if "v4" in vocoders else "v3"}
    models["api"] = models["webui-parallel"] = "v2" if check(work, "api").missing else models["webui"]
    previous = os.getcwd()
    os.chdir(work)
    try:
        gsv_real.install_stubs(work)
        gsv_real.write_vocoders(work, vocoders)
        for seed, version in enumerate(sorted(set(models.values()))):
            gsv_real.write_s2_checkpoint(work, work / gsv_real.S2_FILES[version], version, seed)
        gsv_real.write_t2s_checkpoint(work)
        gsv_real.write_plans(work / "engines", work, vocoders)
        gsv_real.write_yaml(work, models["api"], None)
    finally:
        os.chdir(previous)
    packages = venv(base / "runtime")
    (packages / "aa_gsv_test_doubles.pth").write_text(
        "import sys; exec(\"import importlib.util as u\\ns = u.spec_from_file_location('gsv_start_doubles', "
        f"{str(TESTS / 'gsv_start_doubles.py')!r})\\nm = u.module_from_spec(s)\\ns.loader.exec_module(m)\\nm.install()\") "
        "if sys.argv[0].replace(chr(92), '/').rsplit('/', 1)[-1] in ('inference_webui.py', 'inference_webui_fast.py', "
        "'api_v2.py') else None\n", encoding="utf-8")
    python = python_of(base / "runtime")
    enabled = command(python, "enable", cwd=work)
    assert enabled.returncode == 0, enabled.stderr
    yield SimpleNamespace(python=python, work=work, label=label, models=models)
    gsv_real.forget(work)  # its modules and stubs, out of the way of tests/test_gpt_sovits_real.py's revisions


def assert_served(real, entry: str, served: dict, console: list[str]) -> None:
    """The entry point started (the hook loaded, the stubbed server reached, the project off its
    path) and its model's vocoder is the engine's; where the revision lacks what the drop-in relies
    on, GPT-SoVITS started unchanged, one line saying so, its vocoder its own."""
    version = real.models[entry]
    assert served["entry"] == entry and served["start_hook_loaded"] and served["server_started"]
    assert str(REPO) not in served["path_at_start"]
    if check(real.work, entry).missing:
        assert served[version] is None and not served["run_is_the_launchers"]
        assert len([line for line in console if "unchanged" in line]) == 1, console
        return
    assert served[version] == f"{version}.fp32.plan"
    assert any(f"{version} vocoder: TensorRT engine" in line and f"{version}.fp32.plan" in line for line in console)


@pytest.mark.parametrize("parallel, entry", [(False, "webui"), (True, "webui-parallel")])
def test_go_webui_start_reaches_the_drop_in(real, tmp_path, parallel, entry):
    """webui.py started with -I, its inference switch pressed: the inference UI it starts (with -s,
    through its own Popen, since 2025-06) serves its model's vocoder through the engine, started by
    the hook alone (at 20250228v3 the parallel one starts unchanged: its TTS has no v3/v4)."""
    report = tmp_path / "served.json"
    env = clean_env(GSV_START_ENGINES=str(real.work / "engines"), GSV_START_REPORT=str(report))
    done = subprocess.run([str(real.python), "-I", str(TESTS / "gsv_webui_parent.py"), "1" if parallel else "0",
                           gsv_real.S2_FILES[real.models[entry]], gsv_real.T2S_FILE], cwd=real.work,
                          capture_output=True, encoding="utf-8", env=env, timeout=900)
    console = [line for line in done.stderr.splitlines() if line.startswith("[gsv-vocoder-trt]")]
    print(f"{real.label} {entry}:\n" + "\n".join(console))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    script = "GPT_SoVITS/inference_webui_fast.py" if parallel else "GPT_SoVITS/inference_webui.py"
    assert f'{script} "zh_CN"' in done.stdout  # webui.py prints the command it starts
    served = json.loads(report.read_text(encoding="utf-8"))
    assert served["argv"][1:] == ["zh_CN"]
    assert any(line.endswith("(`python -m serving.gpt_sovits disable` removes it)") and script in line for line in console)
    assert_served(real, entry, served, console)
    if entry == "webui" and real.models[entry] == "v4":  # a switch to a v3 model, and back where upstream let v4 go
        assert served["v3_after_switch"] == "v3.fp32.plan"
        assert served.get("v4_after_switch", "v4.fp32.plan") == "v4.fp32.plan"
    elif entry == "webui-parallel" and not check(real.work, entry).missing:
        assert served["run_is_the_launchers"]


def test_api_v2_started_directly_reaches_the_drop_in(real, tmp_path):
    """`runtime\\python.exe api_v2.py -a 127.0.0.1 -p 9880`, no webui.py: the same hook serves it."""
    report = tmp_path / "served.json"
    env = clean_env(GSV_START_ENGINES=str(real.work / "engines"), GSV_START_REPORT=str(report))
    done = subprocess.run([str(real.python), "api_v2.py", "-a", "127.0.0.1", "-p", "9880"], cwd=real.work,
                          capture_output=True, encoding="utf-8", env=env, timeout=900)
    console = [line for line in done.stderr.splitlines() if line.startswith("[gsv-vocoder-trt]")]
    print(f"{real.label} api:\n" + "\n".join(console))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    served = json.loads(report.read_text(encoding="utf-8"))
    assert served["argv"][1:] == ["-a", "127.0.0.1", "-p", "9880"]
    assert any("api_v2.py started through" in line for line in console)
    assert_served(real, "api", served, console)
    if not check(real.work, "api").missing:
        assert served["run_is_the_launchers"]
