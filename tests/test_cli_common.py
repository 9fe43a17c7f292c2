"""The shared CLI layer: the one runner's error mapping, the parent parser, table loading, atomic writes."""
import argparse
import os
import sys

import numpy as np
import pytest

from jaxdepth import multipliers
from jaxdepth.cli import common
from jaxdepth.io import atomic


def _parser(*options):
    return argparse.ArgumentParser(prog="t", parents=[common.parent_parser(*options)])


@pytest.mark.parametrize("exc, text", [
    (common.CliError("bad thing"), "error: bad thing"),
    (ValueError("line one\nline two"), "error: line one line two"),
    (KeyError("unknown multiplier 'x'"), "error: unknown multiplier 'x'"),
    (FileNotFoundError(2, "No such file or directory", "/no/such"), "error: /no/such: No such file or directory"),
])
def test_user_errors_are_one_line_exit_2(exc, text, capsys):
    def body(args):
        raise exc
    assert common.run(_parser("out"), body, []) == 2
    err = capsys.readouterr().err
    assert err.strip() == text and "Traceback" not in err


def test_ctrl_c_is_a_summary_exit_130(capsys, tmp_path):
    def body(args, done):
        done.what, done.total, done.where = "images", 3, tmp_path
        done.add("a.png")
        raise KeyboardInterrupt
    assert common.run(_parser(), body, ["--no-compile-cache"]) == common.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "interrupted: 1 of 3 images finished" in err and str(tmp_path) in err and "Traceback" not in err


def test_ctrl_c_removes_the_empty_output_folders_it_created(capsys, tmp_path):
    def body(args, done):
        common.check_out_dir(args.out)
        raise KeyboardInterrupt
    out = tmp_path / "new" / "out"
    assert common.run(_parser("out"), body, ["--out", str(out)]) == common.EXIT_INTERRUPTED
    assert not (tmp_path / "new").exists()


INTERRUPTED_PROGRAM = """
import sys, threading, time
from jaxdepth.cli import common

def body(args):
    threading.Thread(target=time.sleep, args=(3600,)).start()   # stands in for XLA work that never ends
    raise KeyboardInterrupt

sys.argv = ["prog"]
common.run(common.argparse.ArgumentParser(prog="prog"), body)
"""


def test_an_interrupted_program_exits_130_at_once():
    """A program (argv None) leaves at once after the summary: interpreter shutdown would wait for threads
    still blocked on work (here a non-daemon thread that sleeps for an hour)."""
    import subprocess
    done = subprocess.run([sys.executable, "-c", INTERRUPTED_PROGRAM], capture_output=True, text=True, timeout=60)
    assert done.returncode == common.EXIT_INTERRUPTED
    assert done.stderr.strip() == "interrupted: 0 items finished"


def test_a_ctrl_c_swallowed_by_a_gc_callback_is_delivered_again(capsys, python_sigint):
    """JAX's garbage-collector callback (like any code whose exceptions Python can only print) would swallow a
    Ctrl-C that lands in it, and the command ran on: the runner delivers it again."""
    import gc
    import time

    fired = []

    def callback(phase, info):
        if not fired:
            fired.append(phase)
            raise KeyboardInterrupt

    def body(args, done):
        gc.callbacks.append(callback)
        try:
            gc.collect()
            time.sleep(5)                       # the redelivered interrupt ends this
        finally:
            gc.callbacks.remove(callback)
        return 0
    hook, start = sys.unraisablehook, time.monotonic()
    assert common.run(_parser(), body, ["--no-compile-cache"]) == common.EXIT_INTERRUPTED
    assert fired and time.monotonic() - start < 4
    assert "interrupted: 0 items finished" in capsys.readouterr().err
    assert sys.unraisablehook is hook


FINISHED_PROGRAM = """
import atexit, os, signal, sys, time
from jaxdepth.cli import common

def body(args):
    print("saved out", flush=True)
    atexit.register(time.sleep, 30)                          # shutdown work (atexit runs the last-registered
    atexit.register(os.kill, os.getpid(), signal.SIGINT)   # first): a Ctrl-C during it

sys.argv = ["prog"]
sys.exit(common.run(common.argparse.ArgumentParser(prog="prog"), body))
"""


def test_a_ctrl_c_after_the_command_finished_keeps_its_exit_code():
    import subprocess
    import time
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", FINISHED_PROGRAM], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "saved out\n")
    assert done.stderr.strip() == "interrupted while shutting down: the command had finished"
    assert time.monotonic() - start < 25                     # it left at once, not after the shutdown work


@pytest.mark.parametrize("argv, text", [
    (["--batch", "0"], "error: argument --batch: expected a positive integer, got 0 (see t --help)"),
    (["--nope"], "error: unrecognized arguments: --nope (see t --help)"),
    (["sub", "--size", "x"], "error: argument --size: invalid int value: 'x' (see t sub --help)"),
])
def test_usage_errors_are_one_line_exit_2(argv, text, capsys):
    parser = _parser("out")
    parser.add_argument("--batch", type=common.positive_int, default=1)
    sub = parser.add_subparsers(dest="cmd")
    sub.add_parser("sub").add_argument("--size", type=int)
    with pytest.raises(SystemExit) as e:
        common.run(parser, lambda args: 0, argv)
    assert e.value.code == 2
    assert capsys.readouterr().err == text + "\n"


def test_commands_run_with_fewer_gc_passes_and_restore_the_collector():
    """While a command body runs, the young-generation threshold is raised (start-up allocates millions of
    long-lived objects); afterwards, also after an error, the caller's thresholds are back."""
    import gc

    before = gc.get_threshold()
    seen = []

    def body(args):
        seen.append(gc.get_threshold())
        raise ValueError("bad input")
    assert common.run(_parser(), body, ["--no-compile-cache"]) == common.EXIT_USAGE
    assert seen == [(common.GC_YOUNG_THRESHOLD, *before[1:])] and gc.get_threshold() == before


def test_bugs_keep_their_traceback():
    def body(args):
        raise ZeroDivisionError("a bug")
    with pytest.raises(ZeroDivisionError):
        common.run(_parser(), body, ["--no-compile-cache"])


def test_parent_parser_options_and_usage_errors(capsys):
    args = _parser().parse_args(["--model", "m", "--multiplier", "t.npy", "--unsigned", "--layers", "a.*", "b",
                                 "--out", "o", "--no-progress", "--no-compile-cache"])
    assert (args.model, args.multiplier, args.signed, args.layers, args.out) == ("m", "t.npy", False, ["a.*", "b"], "o")
    assert args.no_progress and args.no_compile_cache
    assert _parser("out").parse_args([]).out is None and not hasattr(_parser("out").parse_args([]), "model")
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(["--signed", "--unsigned"])
    assert e.value.code == 2
    with pytest.raises(ValueError, match="unknown common options"):
        common.parent_parser("modle")


def test_compile_cache_setting(monkeypatch, tmp_path):
    monkeypatch.setenv(common.COMPILE_CACHE_ENV, "0")
    assert common.compile_cache_dir() is None and common.enable_compile_cache() is None
    monkeypatch.setenv(common.COMPILE_CACHE_ENV, str(tmp_path / "xla"))
    assert common.compile_cache_dir() == tmp_path / "xla"
    monkeypatch.delenv(common.COMPILE_CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert common.compile_cache_dir() == tmp_path / "jaxdepth" / "xla"


def test_an_unusable_compile_cache_folder_is_a_warning_not_silence(monkeypatch, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv(common.COMPILE_CACHE_ENV, str(tmp_path / "afile"))
    assert common.enable_compile_cache() is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: compilation cache {tmp_path / 'afile'}: ")
    assert "running without it" in err[0]


def test_table_files_need_explicit_signedness(tmp_path):
    """An exact UNSIGNED table named like a signed one stays unsigned: signedness is never guessed."""
    table = multipliers.exact_table(False)
    np.save(tmp_path / "myexact.npy", table)
    with pytest.raises(common.CliError, match="--signed or --unsigned"):
        common.make_plan(str(tmp_path / "myexact.npy"))
    m = common.make_plan(str(tmp_path / "myexact.npy"), signed=False)["*"]
    assert not m.signed and np.array_equal(m.table, table)
    # the library's formats: .npz:key, .csv, .txt; and signedness stored with the table (multipliers.save)
    np.savez(tmp_path / "two.npz", a=table, b=table)
    np.savetxt(tmp_path / "t.csv", table, fmt="%d", delimiter=",")
    np.savetxt(tmp_path / "t.txt", table, fmt="%d")
    for spec in ("two.npz:b", "t.csv", "t.txt"):
        assert np.array_equal(common.resolve_multiplier(str(tmp_path / spec), False).table, table)
    multipliers.save(multipliers.get("mul8s_1L2J"), tmp_path / "s.npz")
    stored = common.resolve_multiplier(str(tmp_path / "s.npz"))
    assert stored.signed and np.array_equal(stored.table, multipliers.get("mul8s_1L2J").table)
    # non-integer / too-wide / corrupt tables: clear errors naming the file
    np.save(tmp_path / "frac.npy", table + 0.5)
    np.save(tmp_path / "wide.npy", table.astype(np.int64) << 33)
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    for bad in ("frac.npy", "wide.npy", "junk.npy"):
        with pytest.raises(common.CliError, match=bad):
            common.make_plan(str(tmp_path / bad), signed=False)


def test_plan_argument_errors():
    with pytest.raises(common.CliError, match="--layers needs --multiplier"):
        common.make_plan(None, ["decoder.*"])
    with pytest.raises(common.CliError, match="unknown multiplier"):
        common.make_plan("mul8s_NOPE")
    with pytest.raises(common.CliError, match="apply to table files"):
        common.make_plan("mul8s_1L2J", signed=True)
    assert common.make_plan("mul8s_1L2J", ["decoder.*"]) == {"decoder.*": "mul8s_1L2J"}


def test_missing_table_files_and_folders_are_named_as_such(tmp_path):
    """Said before any question of signedness: a missing table file, a folder passed as a table."""
    for signed in (None, True):
        with pytest.raises(common.CliError, match="missing.npy: no such file"):
            common.resolve_multiplier(str(tmp_path / "missing.npy"), signed)
        with pytest.raises(common.CliError, match="is a folder; expected a multiplier name or a table file"):
            common.resolve_multiplier(str(tmp_path), signed)


def test_out_checks(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(common.CliError, match="is a file"):
        common.check_out_dir(f / "sub")
    assert common.check_out_dir(tmp_path / "new" / "dir").is_dir()
    if os.geteuid() != 0:                       # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(common.CliError, match="not writable"):
            common.check_out_dir(ro)


def test_atomic_writes_leave_old_file_on_interrupt(tmp_path):
    p = tmp_path / "a.npy"
    atomic.save_npy(p, np.arange(3))
    with pytest.raises(KeyboardInterrupt):
        with atomic.replacing(p) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert np.array_equal(np.load(p), np.arange(3)) and sorted(os.listdir(tmp_path)) == ["a.npy"]
    atomic.write_json(tmp_path / "m.json", {"x": np.float32(1.5)})
    assert (tmp_path / "m.json").read_text() == '{\n "x": "1.5"\n}\n'
    # a set of files: all replaced together, or none
    a, b = tmp_path / "s1.txt", tmp_path / "s2.txt"
    a.write_text("old")
    b.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic.replacing_all([a, b]) as (ta, tb):
            ta.write_text("new")
            raise KeyboardInterrupt
    assert a.read_text() == b.read_text() == "old"
    with atomic.replacing_all([a, b]) as (ta, tb):
        ta.write_text("new")
        tb.write_text("new")
    assert a.read_text() == b.read_text() == "new" and len(os.listdir(tmp_path)) == 4


def test_entry_points_declared():
    import tomllib
    from pathlib import Path
    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in scripts.items():
        module, func = target.split(":")
        __import__(module)
        assert callable(getattr(sys.modules[module], func)), name


@pytest.mark.parametrize("module, argv, message", [
    ("jaxdepth.predict", ["--out", "{file}/o"], "is a file, not a folder"),
    ("jaxdepth.evaluate", ["--data", "synthetic:0"], "no frames"),
    ("jaxdepth.data.synthetic", ["{tmp}/s", "--height", "-5"], "expected a positive integer"),
    ("jaxdepth.synthetic", ["{tmp}/s", "--height", "100000", "--width", "100000"], "at most 16.8 MP"),
    ("jaxdepth.synthetic", ["{tmp}/s", "-n", "1000000000"], "GiB free"),
])
def test_python_m_shims_give_one_line_errors(module, argv, message, tmp_path):
    """``python -m jaxdepth.<tool>`` goes through the same runner: one line on stderr, exit 2."""
    import subprocess
    (tmp_path / "file").write_text("x")
    argv = [a.format(file=tmp_path / "file", tmp=tmp_path) for a in argv]
    env = dict(os.environ, JAXDEPTH_COMPILE_CACHE="0")
    res = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_library_warnings_become_one_line(capsys):
    import warnings

    def body(args):
        warnings.warn("12 prediction pixels are NaN", RuntimeWarning)
    assert common.run(_parser("out"), body, []) == 0
    assert capsys.readouterr().err == "warning: 12 prediction pixels are NaN\n"


def test_atomic_write_errors_name_the_destination(tmp_path):
    """An error on the temporary file is reported with the file the user asked for; nothing is left behind."""
    (tmp_path / "a.png").mkdir()                                 # the destination is a folder: rename fails
    with pytest.raises(OSError) as e:
        atomic.write_text(tmp_path / "a.png", "x")
    assert e.value.filename == str(tmp_path / "a.png")
    assert os.listdir(tmp_path) == ["a.png"]


def test_user_error_removes_the_output_folders_it_created(tmp_path, capsys):
    """An output folder made by `check_out_dir` (and its new parents) goes again when the command then stops on
    a user error while the folder is still empty; folders that existed, or hold files, stay."""
    def body(args):
        common.check_out_dir(tmp_path / "new" / "deeper")
        common.check_out_dir(tmp_path)
        raise common.CliError("bad input found after the output check")
    assert common.run(_parser(), body, []) == 2
    assert sorted(os.listdir(tmp_path)) == []

    def writes_then_fails(args):
        out = common.check_out_dir(tmp_path / "kept")
        (out / "result.txt").write_text("done")
        raise common.CliError("second part failed")
    assert common.run(_parser(), writes_then_fails, []) == 2
    assert (tmp_path / "kept" / "result.txt").exists()
    capsys.readouterr()
