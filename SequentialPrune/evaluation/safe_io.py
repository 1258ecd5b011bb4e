"""Safe file I/O for run folders: whole-record appends, atomic replaces, JSON reads, and writes that cannot
happen (read-only work dir, full disk) turned into one clear line.

A full disk or a read-only folder is not a bug of one sample or one dataset:
every later write fails the same way. :class:`WriteFailed` is therefore a
``BaseException``, so it passes through a harness's per-dataset
``except Exception`` (VLMEvalKit's logs a traceback and goes on to the next
dataset) up to the front end, which prints :meth:`WriteFailed.line` and exits
non-zero.
"""
from __future__ import annotations

import errno
import functools
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

# errno values that mean "this location cannot take writes", not "this sample is bad".
NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}
WRITE_ERRNOS = NO_SPACE | NOT_WRITABLE


class WriteFailed(BaseException):
    """A write into the work dir (or LMUData) failed for a reason no retry of the sample fixes."""

    def __init__(self, path, err: OSError):
        super().__init__(path, err)
        self.path = str(path) if path is not None else (err.filename or "?")
        self.errno = err.errno
        self.strerror = err.strerror or str(err)

    def line(self) -> str:
        """The one line the user sees: what, where, and what to do."""
        name = errno.errorcode.get(self.errno, str(self.errno))
        if self.errno in NO_SPACE:
            fix = ("free space (or raise the file size limit) and rerun the same command: "
                   "predictions saved so far are kept and the run resumes")
        else:
            fix = "choose a writable --work-dir (or fix the folder's permissions)"
        return f"cannot write {self.path}: {self.strerror} ({name}); {fix}"

    def __str__(self) -> str:
        return self.line()


# Folders this run writes into (the work dir, the data root); set by the front end at launch. A permission error elsewhere
# (say, an unreadable checkpoint) is a read problem, not a write one.
WRITE_ROOTS: list = []


def _under_write_root(filename) -> bool:
    if not WRITE_ROOTS or filename is None:
        return True
    try:
        p = Path(os.fsdecode(filename)).resolve()
    except (OSError, TypeError, ValueError):
        return True
    return any(p == r or r in p.parents for r in (Path(x).resolve() for x in WRITE_ROOTS))


def is_write_error(e: BaseException) -> bool:
    """An OSError meaning "this location cannot take writes" (full, read-only, not writable)."""
    if not isinstance(e, OSError) or e.errno not in WRITE_ERRNOS:
        return False
    return e.errno not in (errno.EACCES, errno.EPERM) or _under_write_root(e.filename)


def write_failure(e: BaseException) -> Optional[WriteFailed]:
    """``e`` as a :class:`WriteFailed` if it is one or an OSError meaning "cannot write here", else None."""
    if isinstance(e, WriteFailed):
        return e
    if is_write_error(e):
        return WriteFailed(e.filename, e)
    return None


def guard(fn):
    """Wrap ``fn`` so that an OSError meaning "cannot write here" becomes :class:`WriteFailed`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OSError as e:
            if is_write_error(e):
                raise WriteFailed(e.filename, e) from None
            raise
    wrapper._seqprune_guarded = True
    return wrapper


def append_line(path, text: str) -> None:
    """Append ``text`` and a newline to ``path`` as one record, or not at all.

    The line is encoded first and written through one O_APPEND descriptor; a
    short or failed write (full disk, file size limit) is cut back to the
    previous end of file, so a reader never sees half a record.
    """
    path = Path(path)
    data = memoryview((text + "\n").encode("utf-8"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
        if is_write_error(e):
            raise WriteFailed(path, e) from None
        raise
    try:
        start = os.fstat(fd).st_size
        try:
            while data:
                n = os.write(fd, data)
                data = data[n:]
        except OSError as e:
            try:
                os.ftruncate(fd, start)  # shrinking needs no space
            except OSError:
                pass
            if is_write_error(e):
                raise WriteFailed(path, e) from None
            raise
    finally:
        os.close(fd)


def write_text_atomic(path, text: str) -> None:
    """Replace ``path`` with ``text`` via a temporary file and a rename (never a half file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        if is_write_error(e):
            raise WriteFailed(path if e.filename in (None, str(tmp)) else e.filename, e) from None
        raise


@contextmanager
def replacing(path):
    """A temporary path beside ``path`` (same extension, so writers that pick the format by it still work);
    renamed over ``path`` when the block ends without an error, removed either way. Readers of ``path``
    never see a half-written file."""
    path = str(path)
    tmp = f"{path}.seqprune-tmp-{os.getpid()}.{path.rsplit('.', 1)[-1]}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_json(path) -> Optional[dict]:
    """The JSON object in ``path``, or None if it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
