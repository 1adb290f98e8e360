"""What every command shares: the Typer apps, options, exit codes, logging, progress, output.

Exit codes (the same in every command):

== ==========================================================================================
0  every input was analysed (or the command did its job)
1  some inputs could not be analysed (each one is reported: an error line in ``--json``, a
   row or a message otherwise), or the data given cannot be used (manifest, leakage, store)
2  usage error: a missing or malformed option or argument, an impossible configuration, a
   PACS that cannot be reached or refuses the credentials given
3  a refused run or model: missing, malformed, of the wrong kind, or failing its integrity
   check (``ModelFileError`` / ``RunIntegrityError``)
== ==========================================================================================

Progress is drawn only on a terminal (rich, on stderr); when stderr is redirected a plain
line every :data:`PROGRESS_EVERY` files says how far the batch is, so logs stay readable.
"""

from __future__ import annotations

import errno
import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from typer.core import TyperGroup

from medforensics.common.atomic import JsonLinesOutput
from medforensics.common.progress import PROGRESS_EVERY, ProgressReport, show_progress
from medforensics.common.progress import tick_progress as _tick_progress
from medforensics.common.sharding import shard_output_path
from medforensics.data.files import SIDE_FILE_SUFFIXES
from medforensics.errors import ConfigError, ModelFileError, OutputWriteError
from medforensics.pacs.errors import ListenError, PacsError, ScanStateError

__all__ = [
    "ALLOW_MODIFIED_OPT",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "OUT_OPT",
    "PROGRESS_EVERY",
    "PROGRESS_OPT",
    "SHARD_OPT",
    "TRAINING_FREE",
    "app",
    "batch_files",
    "check_run_kind",
    "configure_logging",
    "csv_list",
    "dump_line",
    "exit_code",
    "expand_paths",
    "fail",
    "files_progress",
    "finish_batch",
    "forgery_app",
    "json_sink",
    "show_progress",
    "tick_progress",
    "training_free_name",
    "warn_integrity",
]

T = TypeVar("T")
log = logging.getLogger("medforensics.cli")

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
#: The name of the training-free forgery detector wherever a forgery run is asked for.
TRAINING_FREE = "cues"
#: Older spellings of :data:`TRAINING_FREE`, still accepted with a notice.
_TRAINING_FREE_ALIASES = ("none",)

#: errno values of a write that cannot succeed (disk full, quota, file too large, read-only).
_WRITE_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS")
                          if hasattr(errno, n))


class _Commands(TyperGroup):
    """The command group: a write that fails (disk full, ...) ends with one clear line naming
    the output and exit code 1, not a traceback."""

    def invoke(self, ctx: Any) -> Any:  # click's signature
        try:
            return super().invoke(ctx)
        except OSError as exc:
            if not isinstance(exc, OutputWriteError) and exc.errno not in _WRITE_ERRNOS:
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_PARTIAL) from None


app = typer.Typer(
    cls=_Commands,
    name="medforensics",
    help="Medical-image forensics: which device made an image, and was it altered?",
    epilog="Exit codes: 0 every input analysed; 1 some input could not be analysed (each "
    "reported); 2 usage error; 3 a refused run or model.",
    no_args_is_help=True,
    add_completion=False,
)
forgery_app = typer.Typer(help="Forgery detection and localization.", no_args_is_help=True)

PROGRESS_OPT = typer.Option(
    None, "--progress/--no-progress", help="Progress bar on stderr (default: when stderr is "
    "a terminal; otherwise a line every 100 files).")
SHARD_OPT = typer.Option(
    "auto", "--shard", help="Process shard K/N of the files (0-based, round-robin); 'auto' "
    "takes RANK/WORLD_SIZE from torchrun, 'none' all files.")
OUT_OPT = typer.Option(
    None, "--out", help="Write JSON lines here (per shard: NAME.part-K-of-N.jsonl) instead of "
    "stdout.")
ALLOW_MODIFIED_OPT = typer.Option(
    False, "--allow-modified-run", help="Load runs whose files differ from their run manifest "
    "(run.json) instead of refusing them; every verdict then says run_integrity 'modified'. "
    "Out-of-range values are refused regardless.")


# ---------------------------------------------------------------------- exit codes, logging
def exit_code(exc: BaseException) -> int:
    """The exit code of a failed command (see the module docstring)."""
    if isinstance(exc, OutputWriteError):  # the inputs were fine; an output could not be written
        return EXIT_PARTIAL
    if isinstance(exc, ModelFileError):
        return EXIT_REFUSED
    if isinstance(exc, (PacsError, ScanStateError, ListenError)):
        return EXIT_USAGE  # the server, its credentials or the state file as given do not work
    if isinstance(exc, (ConfigError, typer.BadParameter, ValueError)):
        return EXIT_USAGE
    return EXIT_PARTIAL


def fail(exc: BaseException) -> NoReturn:
    """Print ``error: <message>`` on stderr and leave with :func:`exit_code`."""
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(exit_code(exc)) from None


def configure_logging(verbosity: int) -> None:
    """WARNING by default, ``-v`` INFO, ``-vv`` DEBUG for medforensics; other libraries stay
    at WARNING so their INFO lines (exporters, HTTP clients) do not reach the user."""
    level = (logging.WARNING, logging.INFO)[verbosity] if verbosity < 2 else logging.DEBUG
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("medforensics").setLevel(level)


def warn_integrity(status: str | None, what: str = "run") -> None:
    """One stderr line when a loaded run is not ``verified`` (verdicts carry it too)."""
    if status == "modified":
        typer.echo(f"warning: the {what} was modified after it was written "
                   "(--allow-modified-run): its verdicts are not evidence", err=True)
    elif status == "unverified":
        typer.echo(f"warning: the {what} has no run manifest (run.json): its files could not "
                   "be checked; its verdicts say run_integrity 'unverified'", err=True)


# ---------------------------------------------------------------------- runs
def training_free_name(run: str | None) -> str | None:
    """``run`` with the old spelling of the training-free detector replaced by ``cues``."""
    if run is not None and run.lower() in _TRAINING_FREE_ALIASES and not Path(run).exists():
        typer.echo(f"note: '{run}' now reads '{TRAINING_FREE}' (the training-free forgery "
                   "detector)", err=True)
        return TRAINING_FREE
    return run


def _run_kind(run: Path) -> str | None:
    """``"source"`` or ``"forgery"`` from a run folder's ``model.json``; None if unknown."""
    from medforensics.forgery.detector import FORGERY_PRESETS, RUN_FILE

    try:
        meta = json.loads((run / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    preset = meta.get("preset") or meta.get("name")
    return "forgery" if preset in FORGERY_PRESETS else "source"


def check_run_kind(run: str | Path | None, expected: str, option: str) -> None:
    """Refuse (exit 3) a source-identification run where a forgery run is expected, and the
    other way round, with a message that says which is which.

    Args:
        run: the folder given (``None`` / ``cues``: nothing to check).
        expected: ``"source"`` or ``"forgery"``.
        option: how the user gave it (``RUN``, ``--source-model``, ...), for the message.
    """
    if run is None or str(run).lower() == TRAINING_FREE or not Path(run).is_dir():
        return
    kind = _run_kind(Path(run))
    if kind is None or kind == expected:
        return
    if expected == "forgery":
        want = (f"a forgery run (from `medforensics forgery train`) or '{TRAINING_FREE}' for "
                "the training-free detector")
    else:
        want = "a source-identification run (from `medforensics train`)"
    given = "forgery" if kind == "forgery" else "source-identification"
    fail(ModelFileError(f"{option} {run} is a {given} run; this needs {want}"))


# ---------------------------------------------------------------------- inputs and outputs
def csv_list(value: str | None) -> tuple[str, ...] | None:
    """``"a, b"`` -> ``("a", "b")``; ``None`` stays ``None``."""
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """The files named, in order, each folder replaced by the image candidates under it.

    A folder walk leaves out side files that are never images (``devices.json``, manifests,
    notes: :data:`medforensics.data.files.SIDE_FILE_SUFFIXES`); files named explicitly are always kept, and paths that
    do not exist are kept too, so the batch reports them as not analysed.
    """
    from medforensics.data.files import find_files

    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(f for f in find_files([p])
                       if f.suffix.lower() not in SIDE_FILE_SUFFIXES)
        else:
            out.append(p)
    return out


def batch_files(paths: list[Path], shard: str) -> tuple[list[Path], tuple[int, int], str]:
    """This process's shard of the expanded files, ``(k, n)`` and a label for messages.

    Raises:
        ConfigError: a malformed ``--shard`` (or RANK/WORLD_SIZE).
    """
    from medforensics.common.sharding import parse_shard, take_shard

    k, n = parse_shard(shard)
    files = take_shard(expand_paths(paths), k, n)
    return files, (k, n), ("" if n == 1 else f" [shard {k}/{n}]")


def json_sink(out: Path | None, part: tuple[int, int]
              ) -> tuple[Callable[[str], None], Callable[..., None]]:
    """A ``write(line)`` callable and a ``close(ok=True)``: stdout, or this shard's file.

    A file is streamed to ``NAME.partial`` (whole lines only) and renamed to ``NAME`` by
    ``close()``, so ``NAME`` exists only complete; ``close(False)`` (stopped early) keeps
    ``NAME.partial`` only (:class:`medforensics.common.atomic.JsonLinesOutput`).
    """
    if out is None:
        return typer.echo, (lambda ok=True: None)
    sink = JsonLinesOutput(shard_output_path(out, *part))

    def close(ok: bool = True) -> None:
        if ok:
            sink.close()
        else:
            sink.abandon()

    return sink.write, close


# ---------------------------------------------------------------------- progress
def _echo_err(line: str) -> None:
    typer.echo(line, err=True)


def files_progress(results: Iterable[T], total: int, label: str, enabled: bool | None
                   ) -> Iterator[T]:
    """Yield ``results`` while reporting progress on stderr.

    On a terminal (or ``enabled=True``) a rich bar with files/s runs and one summary line
    follows the last file. Redirected (``enabled=None`` and no terminal), a plain line every
    :data:`PROGRESS_EVERY` files replaces the bar; ``enabled=False`` is silent.
    """
    if enabled is False:
        yield from results
        return
    report = ProgressReport(label, total, enabled, every=PROGRESS_EVERY, emit=_echo_err)
    with report:
        for item in results:
            report.advance()
            yield item
    if report.mode == "bar":
        typer.echo(f"{label}: {report.done} file(s) in {report.seconds:.1f} s "
                   f"({report.rate()})", err=True)


@contextmanager
def tick_progress(label: str, enabled: bool | None) -> Iterator[Callable[[int, int], None]]:
    """A ``(done, total)`` callback for library functions that report progress that way.

    A rich bar on stderr on a terminal (or ``enabled=True``), a plain line every
    :data:`PROGRESS_EVERY` items when redirected, nothing when ``enabled=False``.
    """
    with _tick_progress(label, enabled, every=PROGRESS_EVERY, emit=_echo_err) as tick:
        yield tick


def finish_batch(n_bad: int, n_files: int) -> None:
    """Exit 1, with one stderr line, when no file was given or some could not be analysed."""
    if n_files == 0:
        typer.echo("error: no files to analyse", err=True)
        raise typer.Exit(EXIT_PARTIAL)
    if n_bad:
        typer.echo(f"{n_bad} of {n_files} file(s) could not be analysed", err=True)
        raise typer.Exit(EXIT_PARTIAL)


def dump_line(record: Any) -> str:
    """One JSON line (strict JSON: no NaN)."""
    return json.dumps(record, allow_nan=False)
