"""Finding the files of an archive: a walk that accounts for every entry it meets.

:func:`walk_roots` lists the regular files under the given roots and, for every entry it does
not read (an unreadable folder, a dangling link, a FIFO or device, a link leading outside the
roots), the reason, so that ingest can give each a manifest row instead of dropping it.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medforensics.errors import ConfigError

logger = logging.getLogger(__name__)

#: Suffixes of side files found beside images (archive ground truth, manifests, run files,
#: notes): never images, so a folder walk gives them no image verdict.
SIDE_FILE_SUFFIXES = frozenset({".json", ".jsonl", ".csv", ".txt", ".md", ".html", ".log",
                                ".npy", ".py", ".yaml", ".yml"})


@dataclass
class WalkResult:
    """What :func:`walk_roots` found.

    Attributes:
        files: absolute paths of the regular files to read, sorted, free of repeats.
        skipped: ``(path, status, reason_detail)`` of what was found but is not read: an
            unreadable folder, a dangling link, a FIFO/socket/device, a link to a folder,
            a link leading outside the scanned roots. Each becomes a manifest row.
    """

    files: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)



def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"



def _inside(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)



def walk_roots(roots: Iterable[Path | str], *, follow_links_outside: bool = False) -> WalkResult:
    """Every regular file under ``roots``, and every entry that is not read, with why.

    Directories are walked without following directory links (a link to a folder is
    reported, not entered). A link to a file is read when its target lies inside one of the
    roots (after resolving links), or when ``follow_links_outside`` is set; otherwise it is
    reported as ``link-outside-roots`` and never opened. A root named explicitly is always
    read. Unreadable folders and dangling links are ``unreadable`` (``file-access`` /
    ``dangling-link``); FIFOs, sockets and devices are ``not-a-regular-file`` and are never
    opened (opening a FIFO would block).

    Args:
        roots: directories and/or files.
        follow_links_outside: also read files that links lead to outside the roots.

    Raises:
        ConfigError: a root does not exist.
    """
    found: set[str] = set()
    skipped: dict[str, tuple[str, str, str]] = {}
    real_roots: list[str] = []
    for root in roots:
        root_path = Path(root)
        if not os.path.lexists(root_path):
            raise ConfigError(f"{root_path}: no such file or directory")
        real_roots.append(os.path.realpath(root_path))

    def skip(path: str, status: str, detail: str) -> None:
        skipped.setdefault(path, (path, status, detail))

    for root in roots:
        root_path = Path(root)
        if not root_path.is_dir():
            full = os.path.abspath(root_path)
            try:
                mode = os.stat(full).st_mode
            except OSError as exc:
                skip(full, "unreadable", f"dangling-link: {exc.strerror or exc}")
                continue
            if stat.S_ISREG(mode):
                found.add(full)
            else:
                skip(full, "not-a-regular-file", f"{_kind(mode)}: not read")
            continue

        def on_error(err: OSError, root_path: Path = root_path) -> None:
            where = os.path.abspath(str(err.filename or root_path))
            logger.warning("cannot list %s: %s", where, err.strerror)
            skip(where, "unreadable", f"file-access: cannot list the folder: "
                 f"{err.strerror or err}")

        for dirpath, dirnames, filenames in os.walk(root_path, onerror=on_error):
            dirnames.sort()
            for name in list(dirnames):
                full = os.path.abspath(os.path.join(dirpath, name))
                if os.path.islink(full):
                    skip(full, "not-a-regular-file",
                         f"a link to a folder ({os.readlink(full)}): not followed")
            for name in filenames:
                full = os.path.abspath(os.path.join(dirpath, name))
                try:
                    lmode = os.lstat(full).st_mode
                except OSError as exc:
                    skip(full, "unreadable", f"file-access: {exc.strerror or exc}")
                    continue
                if stat.S_ISLNK(lmode):
                    target = os.path.realpath(full)
                    try:
                        mode = os.stat(full).st_mode
                    except OSError:
                        skip(full, "unreadable",
                             f"dangling-link: the link points to {os.readlink(full)}, "
                             "which does not exist")
                        continue
                    if not follow_links_outside and not _inside(target, real_roots):
                        skip(full, "link-outside-roots",
                             f"the link points to {target}, outside the scanned folders: not "
                             "read (ingest --follow-links-outside reads such files)")
                        continue
                else:
                    mode = lmode
                if stat.S_ISREG(mode):
                    found.add(full)
                else:
                    skip(full, "not-a-regular-file", f"{_kind(mode)}: not read")
    return WalkResult(files=sorted(found),
                      skipped=sorted(v for k, v in skipped.items() if k not in found))



def find_files(roots: Iterable[Path | str], *, follow_links_outside: bool = True) -> list[Path]:
    """Every regular file under ``roots`` (recursively; a root may itself be a file).

    The files of :func:`walk_roots`; what it skips is logged. Links to files outside the
    roots are followed unless ``follow_links_outside=False``.

    Args:
        roots: directories and/or files.
        follow_links_outside: also take files that links lead to outside the roots.

    Returns:
        Absolute paths, sorted.

    Raises:
        ConfigError: a root does not exist.
    """
    res = walk_roots(roots, follow_links_outside=follow_links_outside)
    for path, status, detail in res.skipped:
        logger.warning("%s: skipped (%s: %s)", path, status, detail)
    return [Path(p) for p in res.files]
