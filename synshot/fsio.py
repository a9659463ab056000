"""Durable file output: atomic writes, output-folder locks and atomic publication of a set of files.

Every SynShot tool writes through this module, so that

- a reader (another process, a resumed run, a user) sees the old content or the new content of a file,
  never a mix: data go to a temporary file in the same folder, are flushed and ``fsync``-ed, then
  renamed over the target, and the folder itself is ``fsync``-ed so the rename survives a crash;
- files are created with mode ``0666 & ~umask`` (like ``open()``), not the owner-only ``0600`` of
  :func:`tempfile.mkstemp`: under the usual umask 022 the group and others can read manifests,
  checkpoints and exports on a shared cluster;
- an output folder has one writer at a time (:class:`OutputLock`): a lock file records the owner's
  host, pid and command; a second writer is refused with a message naming the first; a lock left by a
  process that died on this host is detected and taken over;
- a command that produces a *set* of files (an inversion, a subject, an export) publishes it at once
  (:func:`publish_dir`): it writes into a staging folder beside the target, moves the previous set
  aside (``<name>.previous``) and renames the staging folder into place, so stale files of an earlier
  run never sit beside new ones and a failed run leaves the previous set untouched.

Errors that are the user's to fix (unwritable or invalid output path, folder locked by another run)
raise :class:`OutputPathError` / :class:`OutputLockedError`, both :class:`synshot.cli.UsageError`
(exit 2, one ``error:`` line, no traceback).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO, Iterator, TextIO

from synshot.cli import UsageError, get_logger

log = get_logger(__name__)

LOCK_NAME = ".synshot.lock"
PREVIOUS_SUFFIX = ".previous"
STAGING_MARK = ".staging-"
TMP_MARK = ".tmp-"

# OSError numbers that mean "this path cannot be written here" (a user problem, not a bug)
_USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ENOSPC,
                errno.EDQUOT, errno.ENAMETOOLONG, errno.EEXIST, errno.ENOENT, errno.ELOOP, errno.EINVAL}


class OutputPathError(UsageError):
    """An output path that cannot be written (permissions, read-only, a file where a folder must be)."""


class OutputLockedError(UsageError):
    """An output folder in use by another live process."""


# ---------------------------------------------------------------------------------------------- modes


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # portable fallback: read by setting, then restore at once
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode for new files: ``0666 & ~umask``, as ``open()`` would create them."""
    return 0o666 & ~current_umask()


def _user_error(path: Path | str, exc: OSError, what: str = "cannot write") -> OutputPathError:
    reason = exc.strerror or str(exc)
    return OutputPathError(f"{path}: {what} ({reason}); choose a writable output location "
                           f"or fix the folder's permissions")


def is_user_oserror(exc: BaseException) -> bool:
    """True when ``exc`` is an OSError caused by the path (permissions, read-only, space), not a bug."""
    return isinstance(exc, OSError) and exc.errno in _USER_ERRNOS


@contextlib.contextmanager
def user_errors(path: Path | str, what: str = "cannot write") -> Iterator[None]:
    """Turn OSErrors caused by ``path`` (permissions, read-only, full disk) into :class:`OutputPathError`."""
    try:
        yield
    except OutputPathError:
        raise
    except OSError as exc:
        if is_user_oserror(exc):
            raise _user_error(exc.filename or path, exc, what) from None
        raise


# ------------------------------------------------------------------------------------- folders, fsync


def fsync_dir(path: Path | str) -> None:
    """Flush a folder's entry table so that renames/creations in it survive a crash (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (e.g. certain network mounts) refuse fsync on a directory
    finally:
        os.close(fd)


def ensure_dir(path: Path | str) -> Path:
    """Create ``path`` (and parents) and check it is a writable folder; user problems raise OutputPathError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{path}: exists and is not a folder; choose another output folder")
    with user_errors(path, "cannot create the output folder"):
        path.mkdir(parents=True, exist_ok=True)
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputPathError(f"{path}: output folder is not writable; choose a writable output "
                              f"location or fix the folder's permissions")
    return path


# ------------------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: Path | str, *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsync-ed and renamed onto ``path``.

    For writers that take a file name (``safetensors.save_file``, ``np.save``, tar writers). If the
    block raises, the temporary file is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    ensure_dir(path.parent)
    with user_errors(path):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with user_errors(path):
            _finish(tmp, path, mode)
    finally:
        if tmp.exists():
            tmp.unlink()


def _finish(tmp: Path, path: Path, mode: int | None) -> None:
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, file_mode() if mode is None else mode)
    os.replace(tmp, path)
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_open(path: Path | str, mode: str = "wb", *, encoding: str | None = None,
                file_mode_bits: int | None = None) -> Iterator[BinaryIO | TextIO]:
    """Open a temporary file beside ``path`` for writing; published onto ``path`` when the block ends."""
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_open: mode must be 'w', 'wt' or 'wb', got {mode!r}")
    with atomic_path(path, mode=file_mode_bits) as tmp:
        with user_errors(path):
            f = open(tmp, mode, encoding=encoding if "b" not in mode else None)
        with f:
            yield f
            f.flush()


def write_bytes(path: Path | str, data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically and durably; returns ``path``."""
    with atomic_path(path, mode=mode) as tmp:
        with user_errors(path):
            tmp.write_bytes(data)
    return Path(path)


def write_text(path: Path | str, text: str, *, encoding: str = "utf-8", mode: int | None = None) -> Path:
    """Write ``text`` to ``path`` atomically and durably; returns ``path``."""
    return write_bytes(path, text.encode(encoding), mode=mode)


def write_json(path: Path | str, obj: Any, *, indent: int | None = 2, sort_keys: bool = False,
               default: Any = None, mode: int | None = None) -> Path:
    """Write ``obj`` as JSON (newline-terminated) to ``path`` atomically and durably; returns ``path``."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default, allow_nan=False) + "\n"
    return write_text(path, text, mode=mode)


def remove_stale_temps(folder: Path | str, name: str | None = None) -> int:
    """Delete temporary files left in ``folder`` by killed writers (``.NAME.tmp-*``); returns how many."""
    folder = Path(folder)
    prefix = f".{name}{TMP_MARK}" if name else "."
    removed = 0
    if not folder.is_dir():
        return 0
    for entry in folder.iterdir():
        if entry.name.startswith(prefix) and TMP_MARK in entry.name and entry.is_file():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed += 1
    return removed


# ----------------------------------------------------------------------------------------- hashes


def stream_sha256(f: BinaryIO) -> str:
    """Hex SHA-256 of what is left to read in ``f`` (1 MiB blocks)."""
    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of a local file (shards, checkpoint files, exported priors)."""
    with open(path, "rb") as f:
        return stream_sha256(f)


# ---------------------------------------------------------------------------------------------- locks


def _process_start_time(pid: int) -> str | None:
    """Kernel start time of ``pid`` (Linux), to tell a live owner from a recycled pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class OutputLock:
    """One writer per output folder: ``<folder>/.synshot.lock`` (or ``lock_file``) holds the owner.

    Acquisition creates the lock file exclusively (``O_EXCL``, safe on local and NFSv3+ file
    systems). If it exists, the owner recorded in it is checked: a process on this host that no longer
    runs (or whose pid was recycled) left a stale lock, which is taken over with a warning; a live owner,
    or one on another host (whose liveness cannot be checked from here, unless it is an earlier run of
    this very SLURM job, i.e. a requeue), is refused with
    :class:`OutputLockedError` naming host, pid, command and start time, and the fix.

    Re-entrant within one process (nested ``with`` on the same folder is fine). Use as a context manager.
    """

    _held: dict[str, int] = {}  # lock path -> nesting depth in this process

    def __init__(self, folder: Path | str, *, purpose: str = "", lock_file: Path | str | None = None) -> None:
        self.folder = Path(folder)
        self.path = Path(lock_file) if lock_file is not None else self.folder / LOCK_NAME
        self.purpose = purpose or Path(sys.argv[0]).name

    def owner(self) -> dict[str, Any] | None:
        """The record of the current holder, or None if unlocked (unreadable records read as {})."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _record(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start_time(os.getpid()),
                "slurm_job": os.environ.get("SLURM_JOB_ID"), "purpose": self.purpose,
                "command": " ".join(sys.argv)[:500],
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def _is_stale(self, owner: dict[str, Any]) -> bool:
        if not owner:
            # empty/garbled: a writer died between create and write; old enough -> stale
            try:
                return time.time() - self.path.stat().st_mtime > 60
            except FileNotFoundError:
                return True
        job = os.environ.get("SLURM_JOB_ID")
        if owner.get("host") != socket.gethostname():
            # a requeued SLURM job (same job id) restarting on another node replaces its killed self
            return job is not None and owner.get("slurm_job") == job
        pid = int(owner.get("pid", -1))
        if pid == os.getpid():
            return False  # another lock object of this very process: not stale, but refuse below
        if pid <= 0 or not _pid_alive(pid):
            return True
        start = owner.get("start")
        return start is not None and _process_start_time(pid) not in (None, start)

    def acquire(self) -> "OutputLock":
        key = os.path.abspath(self.path)
        if OutputLock._held.get(key):
            OutputLock._held[key] += 1
            return self
        ensure_dir(self.path.parent)
        data = json.dumps(self._record(), indent=1).encode()
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, file_mode())
            except FileExistsError:
                owner = self.owner()
                if owner is None:
                    continue  # released meanwhile
                if self._is_stale(owner):
                    log.warning("%s: taking over a stale lock of %s (pid %s on %s, no longer running)",
                                self.folder, owner.get("purpose", "?"), owner.get("pid", "?"), owner.get("host", "?"))
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    continue
                raise OutputLockedError(self._locked_message(owner)) from None
            except OSError as exc:
                if is_user_oserror(exc):
                    raise _user_error(self.path, exc, "cannot create the lock file") from None
                raise
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            OutputLock._held[key] = 1
            return self
        raise OutputLockedError(f"{self.folder}: could not take the lock {self.path} (it keeps changing "
                                f"owner); another process is starting in this folder")

    def _locked_message(self, owner: dict[str, Any]) -> str:
        who = (f"{owner.get('purpose', '?')} (pid {owner.get('pid', '?')} on {owner.get('host', '?')}, "
               f"since {owner.get('since', '?')}: {owner.get('command', '')!s})") if owner else "an unknown process"
        here = owner.get("host") in (None, socket.gethostname()) if owner else True
        fix = ("wait for it to finish or stop it" if here else
               f"if that process no longer runs on {owner.get('host')}, delete {self.path}")
        return f"{self.folder}: in use by {who}; {fix}, or choose another output folder"

    def release(self) -> None:
        key = os.path.abspath(self.path)
        depth = OutputLock._held.get(key, 0)
        if depth > 1:
            OutputLock._held[key] = depth - 1
            return
        OutputLock._held.pop(key, None)
        owner = self.owner()
        if owner and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_dir(folder: Path | str, purpose: str = "") -> OutputLock:
    """Lock ``folder`` for this process (context manager); see :class:`OutputLock`."""
    return OutputLock(folder, purpose=purpose)


# -------------------------------------------------------------------------------- publishing a set


def sibling_lock(target: Path | str) -> Path:
    """Lock file guarding a folder that is replaced as a whole: ``<parent>/.<name>.lock``."""
    target = Path(target)
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def publish_dir(target: Path | str, *, keep_previous: bool = True, purpose: str = "") -> Iterator[Path]:
    """Write a complete set of outputs into a staging folder, then publish it as ``target`` at once.

    Yields the staging folder (``<parent>/.<name>.staging-<pid>``, same file system). When the block
    succeeds: the folder ``target`` held before (an earlier run's outputs) is moved to
    ``<name>.previous`` (replacing an older ``.previous``; with ``keep_previous=False`` it is removed),
    then the staging folder is renamed to ``target``. So ``target`` never mixes files of two runs, and it
    is absent only between two renames. When the block raises, the staging folder is removed and
    ``target`` is untouched. A sibling lock (:func:`sibling_lock`) keeps two publishers of one target apart.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise OutputPathError(f"{target}: exists and is not a folder; choose another output folder")
    parent = ensure_dir(target.parent)
    with OutputLock(target, purpose=purpose, lock_file=sibling_lock(target)):
        for old in parent.glob(f".{target.name}{STAGING_MARK}*"):  # left by killed publishers
            shutil.rmtree(old, ignore_errors=True)
        staging = parent / f".{target.name}{STAGING_MARK}{os.getpid()}"
        with user_errors(staging, "cannot create the staging folder"):
            staging.mkdir()
        try:
            yield staging
            with user_errors(target, "cannot publish the outputs"):
                _publish(staging, target, keep_previous)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, target: Path, keep_previous: bool) -> None:
    for f in staging.rglob("*"):  # the set is durable before it becomes visible
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        elif f.is_dir():
            fsync_dir(f)
    fsync_dir(staging)
    previous = target.with_name(target.name + PREVIOUS_SUFFIX)
    if target.exists():
        if keep_previous:
            if previous.exists():
                shutil.rmtree(previous)
            os.replace(target, previous)
            log.info("%s: previous outputs moved to %s", target, previous)
        else:
            shutil.rmtree(target)
    os.replace(staging, target)
    fsync_dir(target.parent)
