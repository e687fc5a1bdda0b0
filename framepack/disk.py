"""The file-system boundary: atomic writes, name checks, and one line for what the disk refuses.

Every file FramePack writes goes through `atomic_path` (a hidden temporary file beside the
target, flushed, then renamed over it) or, for folders and copies, through `writing`. Both turn
what the disk can refuse (a full disk, a read-only folder, a name too long, permission denied,
`DISK_ERRORS`) into a `UserError` of one line that names the path and the cause; the temporary
file is removed and the target is left exactly as it was. `check_names` refuses, before any work
starts, a file whose name (or whose temporary name) the file system cannot hold.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

from framepack.errors import UserError

# errno -> what the user can do about it
DISK_ERRORS: dict[int, str] = {
    errno.ENOSPC: "free some space and run the command again",
    errno.EDQUOT: "free some space (the disk quota is used up) and run the command again",
    errno.EFBIG: "the file is too large for this file system; choose another location",
    errno.EROFS: "choose a folder on a writable file system",
    errno.EACCES: "choose another location or change its permissions",
    errno.EPERM: "choose another location or change its permissions",
    errno.ENAMETOOLONG: "choose a shorter name or a shorter folder path",
    errno.ENOTDIR: "a file stands where a folder should be; choose another location",
    errno.EISDIR: "a folder stands where a file should be; choose another name",
    errno.ENOENT: "its folder does not exist or takes no new files; choose another location",
    errno.EIO: "the disk reported an input/output error; check it and run the command again",
    errno.ELOOP: "a symbolic link loops; choose another location",
    errno.EMLINK: "the folder holds too many entries; choose another location",
    errno.ETXTBSY: "the file is in use; close what uses it and run the command again",
}
# How a Rust library (safetensors) reports an OS error in its message.
_RUST_OS_ERROR = re.compile(r"os error (\d+)|code: (\d+)")
NAME_MAX, PATH_MAX = 255, 4096  # Linux's limits, used where the file system does not say


def error_code(err: BaseException) -> int | None:
    """The errno behind `err`: an OSError's, or the one a safetensors error names."""
    if isinstance(err, OSError):
        return err.errno
    if type(err).__name__ == "SafetensorError":
        match = _RUST_OS_ERROR.search(str(err))
        if match:
            return int(match.group(1) or match.group(2))
    return None


def disk_error(
    err: BaseException, path: str | os.PathLike | None = None, *, doing: str = "write"
) -> UserError | None:
    """A one-line UserError for an error the disk raised (None for any other error):
    "cannot write PATH (No space left on device); free some space and run the command again"."""
    code = error_code(err)
    if code not in DISK_ERRORS:
        return None
    where = path if path is not None else getattr(err, "filename", None)
    target = f" {where}" if where is not None else ""
    return UserError(f"cannot {doing}{target} ({os.strerror(code)}); {DISK_ERRORS[code]}")


@contextlib.contextmanager
def writing(path: str | os.PathLike, *, doing: str = "write") -> Iterator[None]:
    """Turn what the disk refuses inside the block into a one-line UserError naming `path`."""
    try:
        yield
    except Exception as err:  # OSError, and safetensors' SafetensorError (a plain Exception)
        refused = disk_error(err, path, doing=doing)
        if refused is None:
            raise
        raise refused from None


def temporary_name(path: Path) -> Path:
    """The hidden temporary file `atomic_path` writes before renaming it to `path`."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success move it over `path` atomically.

    The temporary name is hidden (`.name.<random>.tmp<suffix>`) and keeps the suffix, so
    writers that pick a format by extension (PyAV) still work. If the body raises, the
    temporary file is removed and `path` is left exactly as it was; what the disk refuses
    (`DISK_ERRORS`) becomes a one-line UserError naming `path`.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with writing(path):
            yield tmp
            _fsync_file(tmp)
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not supported on every platform/filesystem.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_names(paths: Iterable[str | os.PathLike], flag: str) -> None:
    """Refuse (UserError) before any work a file the file system cannot name: its temporary
    name (`atomic_path`) longer than the folder's NAME_MAX bytes, or its full path longer than
    PATH_MAX. `flag` names the option the paths come from (e.g. "--out NAME")."""
    for path in map(Path, paths):
        name_max, path_max = _limits(path.parent)
        full = os.fsencode(os.path.abspath(path))
        if len(full) + 16 + len(path.suffix) >= path_max:
            raise UserError(
                f"{flag}: the path {_short(path)} is {len(full)} bytes, over the file system's "
                f"{path_max}; choose a shorter folder path or name"
            )
        need = len(os.fsencode(temporary_name(path).name))
        if need > name_max:
            raise UserError(
                f"{flag}: the name {_short(path.name)} is too long for the file system (writing it needs "
                f"{need} bytes, at most {name_max}); choose a name {need - name_max} bytes shorter"
            )


def _limits(folder: Path) -> tuple[int, int]:
    """NAME_MAX and PATH_MAX of the nearest existing folder (Linux's when it cannot tell)."""
    for parent in (folder, *folder.parents):
        with contextlib.suppress(OSError, ValueError):
            if parent.is_dir():
                return os.pathconf(parent, "PC_NAME_MAX"), os.pathconf(parent, "PC_PATH_MAX")
    return NAME_MAX, PATH_MAX


def _short(text: object, limit: int = 60) -> str:
    text = str(text)
    return text if len(text) <= limit else f"{text[:28]}...{text[-28:]}"
