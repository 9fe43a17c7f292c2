"""What every jaxdepth command line shares: the common options, the one runner, model and table loading.

A CLI module ``jaxdepth/cli/<tool>.py`` has ``build_parser()`` (parents=[`parent_parser`(...)]) and

    def main(argv=None) -> int:
        return run(build_parser(), _main, argv)

`run` parses the arguments, turns JAX's persistent compilation cache on (unless ``--no-compile-cache`` or
``JAXDEPTH_COMPILE_CACHE=0``), calls the body and maps what goes wrong to what a user should see:

- a user error (`CliError`, a bad data set / image / table / checkpoint, a file that cannot be read or
  written: `USER_ERRORS`) -> ``error: <one line>`` on stderr, exit code 2;
- Ctrl-C -> ``interrupted: <what was finished>`` on stderr, exit code 130, no traceback (outputs are
  written atomically, so finished files are whole and unfinished ones absent; output folders it created
  and left empty are removed). Run as a program (``argv`` None), the process then ends at once
  (``os._exit``): a normal interpreter shutdown could wait forever for XLA work blocked on a kernel that a
  background thread was still compiling, or crash inside that compilation. A Ctrl-C that lands where
  Python would only print it (a garbage-collector callback) is delivered again; one after the command has
  finished, during shutdown, says so and keeps the command's exit code;
- argparse's usage errors -> one ``error: ...`` line, exit code 2 (not the whole usage block);
- anything else is a bug: the traceback is kept. ``JAXDEPTH_TRACEBACK=1`` shows tracebacks for user
  errors too.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import os
import signal
import sys
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "default_model"
SAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "samples"
DEFAULT_MODEL = DEFAULT_MODEL_DIR / "checkpoint"

#: ``JAXDEPTH_COMPILE_CACHE``: unset -> the default folder below; ``0``/``off``/``no``/empty -> off; else a folder.
COMPILE_CACHE_ENV = "JAXDEPTH_COMPILE_CACHE"
TRACEBACK_ENV = "JAXDEPTH_TRACEBACK"
EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 2, 130, 141
#: Allocations between the garbage collector's young-generation passes while a command runs (Python's
#: default: 700). A command imports jax, flax, numba and matplotlib (millions of long-lived objects) and
#: traces models; at the default, the full collections that walk all of them take a noticeable share of a
#: later predict (bench/results/startup.md).
GC_YOUNG_THRESHOLD = 50_000


class CliError(Exception):
    """A user error reported as ``error: ...`` with exit code 2."""


#: Exceptions that mean "bad input", not "bug": shown as one line, exit 2. The library raises ValueError
#: (DataError, ImageError, ConversionError, bad tables, NaN checks ...), KeyError (unknown names) and
#: OSError (missing / unreadable / unwritable files) for bad input by convention.
USER_ERRORS: tuple[type[BaseException], ...] = (CliError, ValueError, KeyError, OSError, EOFError)


@dataclass
class Done:
    """What a command has finished, for the Ctrl-C summary: ``done.add("im0.png")`` after each unit."""
    what: str = "items"
    total: Optional[int] = None
    where: Optional[Path] = None
    items: list[str] = field(default_factory=list)
    note: str = ""          # what an interrupt leaves behind, when the counts do not say it
    count: Optional[int] = None   # units finished, when they are not listed in ``items`` (e.g. training steps)

    def add(self, item: str) -> None:
        self.items.append(item)

    def summary(self) -> str:
        of = f" of {self.total}" if self.total is not None else ""
        text = f"{len(self.items) if self.count is None else self.count}{of} {self.what} finished"
        if self.items and self.where is not None:
            text += f" (complete outputs in {self.where})"
        return f"{text}; {self.note}" if self.note else text


# ------------------------------------------------------------------------------------------ options


def parent_parser(*options: str, out_default: Optional[str] = None, out_help: str = "output folder") \
        -> argparse.ArgumentParser:
    """The shared options as an argparse parent (``parents=[parent_parser("model", "out")]``).

    ``options`` (default: all): ``model`` (--model), ``multiplier`` (--multiplier, --signed/--unsigned,
    --layers, --compensate), ``out`` (--out), ``progress`` (--no-progress), ``compile_cache`` (--no-compile-cache).
    """
    known = ("model", "multiplier", "out", "progress", "compile_cache")
    bad = [o for o in options if o not in known]
    if bad:
        raise ValueError(f"unknown common options {bad}; known: {known}")
    use = set(options or known)
    ap = argparse.ArgumentParser(add_help=False)
    g = ap.add_argument_group("common options")
    if "model" in use:
        g.add_argument("--model", help="checkpoint folder or preset name (default: the bundled trained model)")
    if "multiplier" in use:
        g.add_argument("--multiplier", help="approximate multiplier: a name (python -m jaxdepth.multipliers "
                                            "lists them) or a 256x256 table file (.npy, .npz[:key], .csv, .txt)")
        sign = g.add_mutually_exclusive_group()  # shown in the group (argparse >= 3.11)
        sign.add_argument("--signed", dest="signed", action="store_const", const=True, default=None,
                          help="the --multiplier table file is a signed (int8) multiplier")
        sign.add_argument("--unsigned", dest="signed", action="store_const", const=False,
                          help="the --multiplier table file is an unsigned (uint8) multiplier")
        g.add_argument("--layers", nargs="+", default=None, metavar="PATTERN",
                       help="layer-name globs that use --multiplier (default: every layer)")
        g.add_argument("--compensate", action="store_true",
                       help="error compensation: subtract each approximate layer's mean table error, measured "
                            "on the calibration images (one integer per output channel, a bias on hardware)")
    if "out" in use:
        g.add_argument("--out", default=out_default, help=out_help + (f" (default: {out_default})"
                                                                      if out_default else ""))
    if "progress" in use:
        g.add_argument("--no-progress", action="store_true", help="no progress bars")
    if "compile_cache" in use:
        g.add_argument("--no-compile-cache", action="store_true",
                       help=f"do not use JAX's persistent compilation cache ({default_cache_dir()}; "
                            f"{COMPILE_CACHE_ENV}=0 also turns it off, {COMPILE_CACHE_ENV}=DIR moves it)")
    return ap


def positive_int(text: str) -> int:
    """argparse ``type=`` for counts and sizes: 0 and negatives are usage errors (exit 2 before any work)."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse ``type=`` for seeds and offsets: negatives are usage errors (exit 2 before any work)."""
    return _int_at_least(text, 0, "a non-negative integer")


def _int_at_least(text: str, low: int, expected: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if v < low:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {v}")
    return v


# ------------------------------------------------------------------------------------------ runner


def run(parser: argparse.ArgumentParser, body: Callable[..., Optional[int]],
        argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv``, set up the compilation cache, call ``body(args)`` (or ``body(args, done)`` when it
    takes a second parameter, a `Done` for the Ctrl-C summary) and map errors as the module docstring says.
    Returns the exit code (argparse's own usage errors exit 2 through SystemExit, as usual)."""
    import inspect
    _one_line_usage_errors(parser)
    args = parser.parse_args(None if argv is None else list(argv))
    if not getattr(args, "no_compile_cache", True):
        enable_compile_cache()
    done = Done()
    _created_dirs.clear()
    takes_done = len(inspect.signature(body).parameters) >= 2
    try:
        with warnings.catch_warnings(), _fewer_gc_passes(), _interrupts_not_swallowed():
            warnings.showwarning = _show_warning
            code = body(args, done) if takes_done else body(args)
            code = 0 if code is None else int(code)
            if argv is None:        # from here on a Ctrl-C cannot cost any work
                _finished_on_ctrl_c(code)
        return code
    except BrokenPipeError:             # the reader went away (``... | head``): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return _interrupted(done, argv)
    except USER_ERRORS as e:
        if _wraps_interrupt(e):
            return _interrupted(done, argv)
        _remove_created_dirs()
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            raise
        _flush()
        print(f"error: {error_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:
        if _wraps_interrupt(e):
            return _interrupted(done, argv)
        raise


def _interrupted(done: Done, argv: Optional[Sequence[str]]) -> int:
    """The Ctrl-C summary line; empty output folders this command created go."""
    _remove_created_dirs()
    _flush()
    print(f"\ninterrupted: {done.summary()}", file=sys.stderr)
    if argv is None:            # a program, not an in-process caller: leave without tearing down (module doc)
        _flush()
        os._exit(EXIT_INTERRUPTED)
    return EXIT_INTERRUPTED


@contextlib.contextmanager
def _interrupts_not_swallowed():
    """A Ctrl-C that lands where Python can only print an exception (a garbage-collector callback such as
    JAX's, a ``__del__``: "Exception ignored in ...") is delivered to the main thread again a moment later,
    instead of being lost while the command runs on."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            # not from inside the hook: the signal would be handled there and be swallowed again
            timer = threading.Timer(0.01, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
            timer.daemon = True
            timer.start()
            return
        previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _finished_on_ctrl_c(code: int) -> None:
    """After a program's work is done (every output written), a Ctrl-C during the interpreter's shutdown
    says so and leaves with the command's own exit code, instead of a bare 130."""
    def finished(signum: int, frame: Any) -> None:
        _flush()
        print("\ninterrupted while shutting down: the command had finished", file=sys.stderr)
        _flush()
        os._exit(code)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, finished)


def _wraps_interrupt(e: BaseException) -> bool:
    """Whether ``e`` was raised because of a Ctrl-C (Python 3.11 wraps a KeyboardInterrupt raised in a class's
    ``__set_name__`` during an import in a RuntimeError, JAX one raised while comparing pytrees in a ValueError)."""
    seen: set[int] = set()
    cause: Optional[BaseException] = e
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _one_line_usage_errors(parser: argparse.ArgumentParser) -> None:
    """argparse's usage errors (bad option values, unknown options) as one ``error: ...`` line and exit 2,
    like every other user error, instead of the whole usage block; for subcommands' parsers too."""
    def error(message: str, prog: str) -> None:
        _flush()
        print(f"error: {' '.join(message.split())} (see {prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)

    stack = [parser]
    while stack:
        p = stack.pop()
        p.error = functools.partial(error, prog=p.prog)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())


@contextlib.contextmanager
def _fewer_gc_passes():
    """Raise the collector's young-generation threshold to `GC_YOUNG_THRESHOLD` for the block (cycles are
    still collected, in fewer, larger passes); the previous thresholds come back after it."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], GC_YOUNG_THRESHOLD), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def error_line(e: BaseException) -> str:
    """A one-line message for ``e``: KeyError's text unquoted, OSError with its file name, newlines folded."""
    if isinstance(e, KeyError) and e.args:
        text = str(e.args[0])
    elif isinstance(e, OSError) and e.filename and e.strerror:
        text = f"{e.filename}: {e.strerror}"
    else:
        text = str(e) or type(e).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Library warnings (e.g. NaN pixels left out of the metrics) as one ``warning: ...`` line."""
    print(f"warning: {error_line(message) if isinstance(message, BaseException) else message}", file=sys.stderr)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jaxdepth/xla`` (``~/.cache/jaxdepth/xla``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxdepth" / "xla"


def compile_cache_dir() -> Optional[Path]:
    """The compilation cache folder the environment asks for (None: off)."""
    value = os.environ.get(COMPILE_CACHE_ENV)
    if value is None:
        return default_cache_dir()
    if value.strip().lower() in ("", "0", "off", "no", "false"):
        return None
    return Path(value).expanduser()


def enable_compile_cache() -> Optional[Path]:
    """Turn JAX's persistent compilation cache on for this process (compiled models are reused across runs:
    the first LUT model compile takes tens of seconds). Returns the folder, or None when off or the folder
    cannot be created or written (then a one-line warning says so and the run goes on without the cache:
    a cache must never stop a run)."""
    folder = compile_cache_dir()
    if folder is None:
        return None
    try:
        if folder.exists() and not folder.is_dir():
            raise FileExistsError(17, "is a file, not a folder", str(folder))
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable", str(folder))
    except OSError as e:
        print(f"warning: compilation cache {folder}: {e.strerror or e}; running without it (set "
              f"{COMPILE_CACHE_ENV} to a writable folder, or 0)", file=sys.stderr)
        return None
    settings = {"jax_compilation_cache_dir": str(folder), "jax_persistent_cache_min_compile_time_secs": 0.5}
    if "jax" in sys.modules:                 # already imported (in-process callers): update its config
        import jax
        for key, value in settings.items():
            jax.config.update(key, value)
    else:                                    # not yet: JAX reads these at import (no slow import for a usage error)
        for key, value in settings.items():
            os.environ.setdefault(key.upper(), str(value))
    return folder


# ------------------------------------------------------------------------------------------ checks


#: Folders `check_out_dir` created in this command, deepest first (`run` removes the empty ones on a user error).
_created_dirs: list[Path] = []


def _remove_created_dirs() -> None:
    """A user error leaves nothing behind: the folders this command created, if still empty, go again."""
    for d in _created_dirs:
        try:
            d.rmdir()                  # only succeeds on an empty folder
        except OSError:
            pass
    _created_dirs.clear()


def check_out_dir(path: str | os.PathLike, option: str = "--out", create: bool = True) -> Path:
    """The output folder ``path``, created now and checked writable BEFORE any long work (CliError if not);
    ``create=False``: only checked (its nearest existing folder must be writable), for commands that create
    it once every other input is checked."""
    out = Path(path)
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            raise CliError(f"{option} {out}: {parent} is a file, not a folder")
    if not create:
        from ..io.atomic import write_obstacle
        obstacle = write_obstacle(out)
        if obstacle is not None:
            raise CliError(f"{option} {out}: {obstacle}")
        return out
    missing = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"{option} {out}: cannot create the folder ({e.strerror or e})") from None
    _created_dirs.extend(missing)       # deepest first: removed again if the command stops on a user error
    if not os.access(out, os.W_OK | os.X_OK):
        raise CliError(f"{option} {out}: the folder is not writable")
    return out


def check_out_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """An output FILE path whose folder exists (or can be created) and is writable (CliError if not)."""
    p = Path(path)
    if p.is_dir():
        raise CliError(f"{option} {p}: is a folder, expected a file name")
    blocking = next((q for q in p.parents if q.is_file()), None)
    if blocking is not None:
        raise CliError(f"{option} {p}: {blocking} is a file, not a folder")
    check_out_dir(p.parent, option)
    return p


# ------------------------------------------------------------------------------------------ model, tables


def load_model(spec: Optional[str]) -> tuple[Any, dict, dict]:
    """(model, variables, info) from a checkpoint folder, or a preset name (random weights, with a warning).

    ``spec=None``: the bundled default model.
    """
    from .. import models
    from ..io import checkpoint
    path = Path(spec) if spec else DEFAULT_MODEL
    if path.exists():
        try:
            return checkpoint.load(path)
        except (OSError, ValueError, KeyError) as e:      # corrupt / truncated files: name the checkpoint
            text = error_line(e)
            raise CliError(text if str(path) in text else f"--model {path}: {text}") from None
    if spec and spec in models.list_presets():
        model = models.build(spec)
        return model, models.init_variables(model, 0), {"preset_name": spec, "random_weights": True}
    if spec is None:
        raise CliError(f"the bundled default model is missing ({DEFAULT_MODEL})")
    raise CliError(f"--model {spec!r} is neither a checkpoint folder nor a preset "
                   f"({', '.join(models.list_presets())}); convert PyTorch weights with python -m jaxdepth.convert")


def parse_plan(text: Optional[str], option: str = "--plan") -> Optional[dict]:
    """A JSON plan from the command line (None when empty), checked now (JSON, multiplier names) so a typo
    fails before any work."""
    import json
    if not text:
        return None
    try:
        plan = json.loads(text)
    except json.JSONDecodeError as e:
        raise CliError(f"{option} is not valid JSON ({e.msg} at character {e.pos}): {text!r}") from None
    if not isinstance(plan, dict):
        raise CliError(f"{option} must be a JSON object {{\"layer glob\": \"multiplier\"}}, got {text!r}")
    from ..models import Plan
    try:
        Plan.make(plan)
    except (KeyError, ValueError, TypeError) as e:
        raise CliError(f"{option}: {error_line(e)}") from None
    return plan


def make_plan(multiplier: Optional[str], layers: Optional[Sequence[str]] = None,
              signed: Optional[bool] = None) -> Optional[dict]:
    """{pattern: multiplier for each --layers pattern} (None without --multiplier), after checking the name
    or loading the table file. ``--layers`` without ``--multiplier`` is an error (it would be ignored)."""
    if not multiplier:
        if layers:
            raise CliError("--layers needs --multiplier (which multiplier should those layers use?)")
        if signed is not None:
            raise CliError("--signed / --unsigned describe a --multiplier table file; no --multiplier given")
        return None
    m = resolve_multiplier(multiplier, signed)
    value = multiplier if not is_table_file(multiplier) else m     # names stay names (JSON-friendly plans)
    return {pat: value for pat in (layers or ("*",))}


def is_table_file(spec: str) -> bool:
    """True when ``spec`` names a table file (``file.npz:key`` too) rather than a multiplier name."""
    from ..multipliers.loaders import _split_npz_key
    path = _split_npz_key(spec)[0]
    return os.path.isfile(path) or Path(path).suffix.lower() in (".npy", ".npz", ".csv", ".txt", ".dat")


def resolve_multiplier(spec: str, signed: Optional[bool] = None) -> Any:
    """A `Multiplier` from a name or a table file (through `jaxdepth.multipliers.load`, the one loader).

    A table file needs its signedness: ``signed`` (--signed / --unsigned) or stored with the table; it is
    never guessed from the file name or the entries."""
    from .. import multipliers
    from ..multipliers.loaders import _split_npz_key
    path = _split_npz_key(spec)[0]
    if os.path.isdir(path):
        raise CliError(f"--multiplier {spec}: is a folder; expected a multiplier name or a table file")
    if not is_table_file(spec):
        if signed is not None:
            raise CliError(f"--signed / --unsigned apply to table files; {spec!r} is a named multiplier "
                           "whose signedness is known")
        try:
            return multipliers.get(spec)
        except KeyError as e:
            raise CliError(str(e.args[0]) if e.args else str(e)) from None
    if not os.path.exists(path):
        raise CliError(f"--multiplier {spec}: no such file")
    if signed is None:
        signed = stored_signedness(spec)
    if signed is None:
        raise CliError(f"--multiplier {spec}: say whether the table is signed (int8 operands) or unsigned "
                       "(uint8): add --signed or --unsigned")
    try:
        return multipliers.load(spec, signed=signed)
    except FileNotFoundError as e:
        raise CliError(str(e)) from None
    except (ValueError, KeyError) as e:
        raise CliError(f"--multiplier {spec}: {error_line(e)}") from None


def stored_signedness(spec: str) -> Optional[bool]:
    """The signedness stored with a table: an ``.npz`` holding a boolean ``signed`` entry, else None."""
    import numpy as np

    from ..multipliers.loaders import _split_npz_key
    path = _split_npz_key(spec)[0]
    if not path.lower().endswith(".npz") or not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if "signed" in z.files and z["signed"].size == 1:
                return bool(z["signed"])
    except (OSError, ValueError, EOFError):
        return None
    return None


def check_compensate(compensate: bool, plan: Any, stored_plan_possible: bool = False) -> None:
    """CliError when --compensate is asked of a model that runs float: no --multiplier and no stored plan
    (``stored_plan_possible``: a --model not loaded yet may still bring one)."""
    if compensate and plan is None and not stored_plan_possible:
        raise CliError("--compensate needs --multiplier (or a checkpoint with a stored plan): the model runs float")


def check_layers(model: Any, patterns: Optional[Sequence[str]], size: Optional[Sequence[int]]) -> None:
    """CliError when a --layers pattern matches no multiplying layer of ``model`` (`check_plan_layers`)."""
    check_plan_layers(model, patterns, size, option="--layers")


def check_plan_layers(model: Any, plan: Any, size: Optional[Sequence[int]], option: str = "--plan") -> None:
    """CliError when a pattern of ``plan`` (a dict, a `Plan` or a list of globs) matches no multiplying layer of ``model``: a
    mistyped glob would otherwise leave its layers float without a word. Models without a plan are not checked."""
    if plan is None or not hasattr(model, "plan"):
        return
    from ..models import layer_names
    from ..models.plan import unmatched_patterns
    problem = unmatched_patterns(plan, layer_names(model, size))
    if problem:
        raise CliError(f"{option}: {problem}")
