"""bench/gpu_check.sh and its engine bench/gpu_check.py, on the CPU: argument handling, the wheel
list, the budget, the no-GPU exit, reading what the steps wrote, and a whole CPU dry run."""
from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import textwrap
import time
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "bench"))

import gpu_check as gc  # noqa: E402

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")


def sh(*args, env=None, timeout=300):
    e = dict(os.environ)
    e.pop("OUT", None)
    e.update(env or {})
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, env=e, timeout=timeout, cwd=ROOT)


PY = ("--python", sys.executable)


def gpu_here():
    from poseidon_cli import backend
    return backend.gpu_available()


# -- arguments -----------------------------------------------------------------------------------

def test_help_lists_every_option_the_parser_takes():
    r = sh("--help")
    assert r.returncode == 0 and r.stderr == ""
    source = SCRIPT.read_text()
    parsed = set(re.findall(r"^\s+(--[a-z-]+)[)|=]", source, re.M))
    assert {"--budget", "--wheels", "--python", "--conformance", "--only", "--cpu-dry-run",
            "--print-wheels"} <= parsed
    for opt in parsed:
        assert opt in r.stdout, opt
    assert "Exit status: 0 every target met, 1 a target missed, 2 bad usage, 3 no GPU" in r.stdout


@pytest.mark.parametrize("args, message", [
    (("--budget", "x"), "--budget 'x': give whole seconds"),
    (("--budget", "0"), "--budget 0: give a positive number"),
    (("--budget", "-5"), "--budget '-5': give whole seconds"),
    (("--budget",), "--budget needs a number of seconds"),
    (("--bogus",), "unknown option --bogus"),
    (("a", "b"), "one OUTDIR only (got 'a' and 'b')"),
    (("--only", "probe,gpu"), "--only: unknown step 'gpu'"),
    (("--wheels", "/nonexistent/wheels"), "--wheels /nonexistent/wheels: no such folder"),
    (("--python", "no-such-python-17"), "--python no-such-python-17: no such interpreter"),
    (("--conformance", "/nonexistent"), "--conformance /nonexistent: no bvlc/ folder"),
])
def test_bad_usage_is_one_line_and_exit_2(tmp_path, args, message):
    r = sh(*args, env={"OUT": str(tmp_path / "out")})
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("gpu_check.sh: error: ") and message in r.stderr
    assert r.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()   # nothing written for a bad command line


def test_python_engine_rejects_bad_budget_and_steps(tmp_path, capsys):
    for argv in ([str(tmp_path), "--budget", "0"], [str(tmp_path), "--only", "nope"]):
        with pytest.raises(SystemExit) as exc:
            gc.main(argv)
        assert exc.value.code == 2
    assert "unknown step(s) nope" in capsys.readouterr().err


# -- wheels --------------------------------------------------------------------------------------

def test_wheel_list_is_pyprojects_runtime_dependencies_less_numpy(tmp_path):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = [d for d in project["dependencies"] if not d.lower().startswith("numpy")]
    assert len(expected) == len(project["dependencies"]) - 1
    r = sh("--print-wheels", tmp_path / "w", *PY)
    assert r.returncode == 0, r.stderr
    argv = shlex.split(r.stdout)
    assert argv[:4] == ["python3", "-m", "pip", "download"]
    assert "--only-binary=:all:" in argv and "--no-deps" in argv
    assert argv[argv.index("--python-version") + 1] == "3.12"
    assert "manylinux2014_x86_64" in argv
    assert argv[argv.index("-d") + 1] == str(tmp_path / "w")
    assert argv[argv.index("-d") + 2:] == expected
    assert gc.gpu_extra() == project["optional-dependencies"]["gpu"]


def _tiny_wheel(folder):
    """A valid, minimal pure-Python wheel (module gpucheck_marker)."""
    path = folder / "gpucheck_marker-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("gpucheck_marker.py", "VALUE = 17\n")
        di = "gpucheck_marker-0.1.dist-info"
        z.writestr(f"{di}/METADATA", "Metadata-Version: 2.1\nName: gpucheck-marker\nVersion: 0.1\n")
        z.writestr(f"{di}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                  "Tag: py3-none-any\n")
        z.writestr(f"{di}/RECORD", "")
    return path


def test_wheels_are_installed_privately_before_the_checks(tmp_path):
    pytest.importorskip("pip")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _tiny_wheel(wheels)
    out = tmp_path / "out"
    r = sh(out, "--wheels", wheels, "--cpu-dry-run", "--only", "probe", *PY)
    log = (out / "check.log").read_text()
    assert "installed 1 wheel(s) from" in log, log
    assert r.returncode == 0, r.stdout + r.stderr
    assert not list(out.glob("*.py"))   # installed outside OUTDIR


# -- budget --------------------------------------------------------------------------------------

def test_step_timeout_by_hand():
    # plenty of time: the cap
    assert gc.step_timeout(540, 30, 240, later_min_s=80, reserve=10) == 240
    # later steps' minimums are kept free: 200 - 10 - 80
    assert gc.step_timeout(200, 30, 240, later_min_s=80, reserve=10) == 110
    # not enough for this step and the later ones: this step takes what is left
    assert gc.step_timeout(100, 30, 240, later_min_s=80, reserve=10) == 90
    # not even this step's minimum
    assert gc.step_timeout(39, 30, 240, later_min_s=0, reserve=10) is None


@pytest.mark.parametrize("budget", [1, 15, 40, 75, 120, 200, 333, 540, 900])
def test_steps_never_overrun_the_budget(budget, tmp_path):
    """Every step running to its full timeout still ends inside the budget, with the reserve
    left for the summary; a step that runs gets at least its minimum."""
    steps = gc.build_steps("python3", tmp_path, tmp_path, dry_run=False)
    used = 0.0
    for i, s in enumerate(steps):
        t = gc.step_timeout(budget - used, s.min_s, s.cap_s, sum(x.min_s for x in steps[i + 1:]))
        if t is not None:
            assert s.min_s <= t <= s.cap_s
            used += t
    assert used <= max(budget - gc.RESERVE_S, 0)


def test_a_small_budget_skips_steps_and_says_so(tmp_path):
    out = tmp_path / "out"
    r = sh(out, "--budget", 20, "--cpu-dry-run", *PY)
    assert r.returncode == 1, r.stdout + r.stderr
    s = json.loads((out / "summary.json").read_text())
    status = {st["name"]: st["status"] for st in s["steps"]}
    assert status["probe"] in ("pass", "timeout")   # it may not get through on a loaded machine
    assert all(status[n] == "no budget" for n in ("pytest", "engine", "profiles", "digits"))
    probe = s["steps"][0]
    # 20 s less the installs' seconds less the reserve, and the step's cap
    assert 0 < probe["timeout_s"] <= 20 - gc.RESERVE_S
    assert s["budget_s"] <= 20 and s["exit_code"] == 1
    assert "no budget" in r.stdout


def test_a_budget_below_the_reserve_runs_nothing(tmp_path):
    out = tmp_path / "out"
    r = sh(out, "--budget", 9, "--cpu-dry-run", *PY)
    assert r.returncode == 1, r.stdout + r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert [st["status"] for st in s["steps"]] == ["no budget"] * 5


def test_a_step_past_its_timeout_is_killed_with_its_children(tmp_path):
    marker = tmp_path / "child.pid"
    code = textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(marker)!r}, "w").write(str(child.pid))
        time.sleep(120)
    """)
    with open(tmp_path / "log", "w") as log:
        rc, _ = gc.run_logged([sys.executable, "-c", code], 3, log, dict(os.environ))
    assert rc is None
    pid = int(marker.read_text())
    for _ in range(50):   # the kill is asynchronous; the orphan is reaped by init
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().split()[2] == "Z":
                break
        time.sleep(0.1)
    else:
        pytest.fail(f"grandchild {pid} survived the step's timeout")
    assert "[exit timeout]" in (tmp_path / "log").read_text()


# -- no GPU ----------------------------------------------------------------------------------------

def test_no_gpu_exits_3_with_a_clear_message(tmp_path):
    if gpu_here():
        pytest.skip("a GPU exists here")
    out = tmp_path / "out"
    r = sh(out, *PY)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "gpu_check: no usable GPU" in r.stderr and "--cpu-dry-run" in r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["exit_code"] == 3 and s["dry_run"] is False
    assert s["steps"][0]["status"] == "no gpu"
    assert [st["status"] for st in s["steps"][1:]] == ["skipped"] * 4
    assert sorted(p.name for p in out.iterdir()) == ["check.log", "summary.json", "summary.txt"]


def test_results_go_to_OUT_when_no_outdir_is_given(tmp_path):
    r = sh("--cpu-dry-run", "--only", "probe", *PY, env={"OUT": str(tmp_path)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["steps"][0]["status"] == "pass"


# -- reading the steps' results --------------------------------------------------------------------

def test_parse_junit_of_a_real_pytest_run(tmp_path):
    (tmp_path / "test_mix.py").write_text(textwrap.dedent("""
        import pytest
        def test_ok1(): pass
        def test_ok2(): pass
        def test_bad(): assert 1 == 2
        def test_skip(): pytest.skip("why")
        @pytest.fixture
        def broken(): raise RuntimeError("setup")
        def test_error(broken): pass
    """))
    xml = tmp_path / "r.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    f"--junitxml={xml}", str(tmp_path / "test_mix.py")],
                   capture_output=True, cwd=tmp_path, timeout=120)
    j = gc.parse_junit(xml)
    assert (j["tests"], j["passed"], j["failures"], j["errors"], j["skipped"]) == (5, 2, 1, 1, 1)
    assert sorted(i.rsplit("::", 1)[1] for i in j["failed_ids"]) == ["test_bad", "test_error"]


def _engine_json(out, rows):
    (out / "engine.json").write_text(json.dumps({"results": [
        {"net": n, "device": d, "batch": b, "ratio_ours_over_torch": r, "ours_img_s": 100 * r,
         "torch_img_s": 100.0} for n, d, b, r in rows]}))


@pytest.mark.parametrize("rows, status", [
    ([("alexnet", "gpu", 128, 0.85), ("googlenet", "gpu", 32, 0.80)], "pass"),
    ([("alexnet", "gpu", 128, 0.85), ("googlenet", "gpu", 32, 0.79)], "miss"),
    ([("alexnet", "gpu", 128, 1.3)], "miss"),                                # GoogLeNet missing
    ([("alexnet", "cpu", 128, 1.3), ("googlenet", "gpu", 32, 1.0)], "miss"),  # not on the GPU
    ([("alexnet", "gpu", 64, 1.3), ("googlenet", "gpu", 32, 1.0)], "miss"),   # wrong batch
])
def test_engine_target(tmp_path, rows, status):
    _engine_json(tmp_path, rows)
    got, detail, metrics = gc.evaluate("engine", tmp_path, dry_run=False)
    assert got == status, detail
    if status == "pass":
        assert metrics["googlenet"]["ratio"] == 0.80


@pytest.mark.parametrize("accs, status", [([0.9731], "pass"), ([0.9697], "miss"), ([], "miss")])
def test_digits_target(tmp_path, accs, status):
    (tmp_path / "digits_gpu.json").write_text(json.dumps(
        {"rows": [{"run": "2 clients", "accuracy": a} for a in accs]}))
    assert gc.evaluate("digits", tmp_path, dry_run=False)[0] == status


def test_profiles_must_come_from_the_gpu(tmp_path):
    from poseidon_cli import profile
    for net, batch in (("alexnet", 128), ("googlenet", 32)):
        profile.write_profile(tmp_path / f"profile_{net}.json", profile.Profile(
            net=net, batch=batch, device="GPU 0: NVIDIA H200", layers=[
                profile.LayerTime("conv1", "Convolution", 1.0, 2.0, 10)]))
    status, detail, metrics = gc.evaluate("profiles", tmp_path, dry_run=False)
    assert status == "pass" and metrics["alexnet"]["forward_ms"] == 1.0
    p = profile.read_profile(tmp_path / "profile_googlenet.json")
    p.device = "CPU: some host"
    profile.write_profile(tmp_path / "profile_googlenet.json", p)
    assert gc.evaluate("profiles", tmp_path, dry_run=False)[0] == "miss"
    (tmp_path / "profile_alexnet.json").write_text("{")
    status, detail, _ = gc.evaluate("profiles", tmp_path, dry_run=False)
    assert status == "miss" and "profile_alexnet.json: line 1: not JSON" in detail


@pytest.mark.parametrize("probe, status", [
    ({"cupy": None, "cupy_error": "ModuleNotFoundError: cupy"}, "no gpu"),
    ({"cupy": "14.2.0", "cupy_gpus": 0}, "no gpu"),
    ({"cupy": "14.2.0", "cupy_gpus": 1, "device": "GPU 0: x", "torch_cuda": False}, "no gpu"),
    ({"cupy": "14.2.0", "cupy_gpus": 1, "device": "GPU 0: x", "torch_cuda": True}, "pass"),
    ({"poseidon_error": "ImportError: protobuf"}, "miss"),
])
def test_probe_verdicts(tmp_path, probe, status):
    text = "noise\nPROBE " + json.dumps(probe) + "\n"
    assert gc.evaluate("probe", tmp_path, False, gc.parse_probe(text))[0] == status


def test_exit_codes():
    R = gc.Result
    assert gc.exit_code([R("probe", "pass"), R("pytest", "pass")]) == 0
    assert gc.exit_code([R("probe", "pass"), R("pytest", "miss")]) == 1
    assert gc.exit_code([R("probe", "pass"), R("engine", "timeout")]) == 1
    assert gc.exit_code([R("probe", "pass"), R("digits", "no budget")]) == 1
    assert gc.exit_code([R("probe", "no gpu"), R("pytest", "skipped")]) == 3


# -- the whole thing, on the CPU -------------------------------------------------------------------

@pytest.mark.slow
def test_cpu_dry_run_end_to_end(tmp_path, conformance_dir):
    out = tmp_path / "out"
    r = sh(out, "--cpu-dry-run", "--conformance", conformance_dir, *PY, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr + (out / "check.log").read_text()
    s = json.loads((out / "summary.json").read_text())
    assert [st["name"] for st in s["steps"]] == ["probe", "pytest", "engine", "profiles",
                                                 "digits"]
    assert all(st["status"] == "pass" for st in s["steps"])
    assert s["dry_run"] is True and s["device"].startswith("CPU: ")
    for st in s["steps"]:   # the table on stdout and in summary.txt
        assert re.search(rf"^{st['name']}\s+pass\s", r.stdout, re.M)
    assert (out / "summary.txt").read_text().strip() in r.stdout
    # a flat folder of few files with plain names (results may travel through a narrow channel)
    files = list(out.iterdir())
    assert len(files) <= 8 and all(f.is_file() for f in files)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", f.name) for f in files)
    assert {"check.log", "pytest_gpu.xml", "engine.json", "profile_lenet.json",
            "digits_gpu.json"} <= {f.name for f in files}
    pytest_step = s["steps"][1]["metrics"]
    assert pytest_step["passed"] > 0 and pytest_step["failures"] == 0


def test_engine_errors_are_reported(tmp_path):
    _engine_json(tmp_path, [("alexnet", "gpu", 128, 0.9)])
    data = json.loads((tmp_path / "engine.json").read_text())
    data["errors"] = [{"net": "googlenet", "device": "gpu", "stage": "step",
                       "error": "CUDARuntimeError: out of memory"}]
    (tmp_path / "engine.json").write_text(json.dumps(data))
    status, detail, metrics = gc.evaluate("engine", tmp_path, dry_run=False)
    assert status == "miss"
    assert "googlenet b32: no result" in detail and "failed at step: CUDARuntimeError" in detail
    assert gc.evaluate("engine", tmp_path, dry_run=True)[0] == "miss"
