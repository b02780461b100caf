"""File I/O: positional reads, and the only pwrite/fsync/fallocate/ftruncate/rename calls.

Writers never write through a memory map: a full disk then surfaces as an
``OSError`` from ``pwrite``/``fallocate`` at save time instead of a SIGBUS in
whichever process touches the page later (SPEC.md §7).
"""

from __future__ import annotations

import errno
import os

from . import failpoints


def write_all(fd: int, data, offset: int) -> None:
    """``data`` at ``offset`` of ``fd``, whole: ``os.pwrite`` may write less than
    it is given (a signal, a full device), and a short write must not pass for one."""
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class FileIO:
    """An open file descriptor of a Needle file."""

    def __init__(self, path: str, writable: bool):
        self.path = path
        self.real_path = os.path.realpath(path)  # the file's name with symlinks resolved, at open
        self.writable = writable
        flags = os.O_RDWR if writable else os.O_RDONLY
        self.fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))

    @property
    def file_uuid(self) -> bytes:
        """The header's ``file_uuid`` (SPEC §2: written once, so read once)."""
        found = self.__dict__.get("_file_uuid")
        if found is None:
            found = self.__dict__["_file_uuid"] = os.pread(self.fd, 16, 24)
        return found

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def inode(self) -> tuple[int, int]:
        st = os.fstat(self.fd)
        return st.st_dev, st.st_ino

    def pread(self, length: int, offset: int) -> bytes:
        chunks = []
        while length > 0:
            chunk = os.pread(self.fd, length, offset)
            if not chunk:
                break
            chunks.append(chunk)
            length -= len(chunk)
            offset += len(chunk)
        return b"".join(chunks)

    def pwrite(self, data, offset: int) -> None:
        tear = failpoints.io_call("pwrite")
        view = memoryview(data).cast("B")
        if tear:
            os.pwrite(self.fd, view[: len(view) // 2], offset)
            failpoints.die()
        write_all(self.fd, view, offset)
        failpoints.record("pwrite", offset, len(view), view)

    def fsync(self) -> None:
        failpoints.io_call("fsync")
        os.fsync(self.fd)
        failpoints.record("fsync")

    def extend(self, length: int) -> None:
        """Grow the file to ``length`` bytes (holes read as zeros); never shrinks it."""
        if self.size() < length:
            failpoints.io_call("ftruncate")
            os.ftruncate(self.fd, length)
            failpoints.record("ftruncate", 0, length)

    def punch_hole(self, offset: int, length: int) -> None:
        """Give the disk blocks of ``[offset, offset + length)`` back: the bytes
        read as zeros, the file keeps its length (Linux ``FALLOC_FL_PUNCH_HOLE``).
        Where the file system cannot, nothing happens (the bytes stay, unused)."""
        failpoints.io_call("punch_hole")
        failpoints.record("punch_hole", offset, length)
        fn = _fallocate_fn()
        if not fn:
            return
        import ctypes

        if fn(self.fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
            err = ctypes.get_errno()
            if err not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise OSError(err, os.strerror(err), self.path)

    def allocate(self, offset: int, length: int) -> None:
        """Reserve disk blocks so that a full disk fails here, not later."""
        failpoints.io_call("fallocate")
        failpoints.record("fallocate", offset, length)
        try:
            os.posix_fallocate(self.fd, offset, length)
        except OSError as exc:
            # Some file systems (tmpfs on old kernels, some FUSE) lack fallocate;
            # pwrite still reports ENOSPC there, so the guarantee holds.
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc_fallocate = None


def _fallocate_fn():
    global _libc_fallocate
    if _libc_fallocate is None:
        import ctypes
        import ctypes.util

        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fn = libc.fallocate
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            fn.restype = ctypes.c_int
            _libc_fallocate = fn
        except (OSError, AttributeError):
            _libc_fallocate = False
    return _libc_fallocate


def write_new_file(path: str, pieces: list[tuple[int, bytes]]) -> None:
    """Create ``path`` atomically: write a temp file, fsync it, rename, fsync the dir.

    A crash at any point leaves either no file at ``path`` or the complete one.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        for offset, data in pieces:
            failpoints.io_call("pwrite")
            failpoints.record("other.pwrite")  # the trace counts every mutating call; only the open file's are replayed
            write_all(fd, data, offset)
        failpoints.io_call("fsync")
        failpoints.record("other.fsync")
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    failpoints.hit("create.before_rename")
    failpoints.io_call("rename")
    failpoints.record("other.rename")
    os.rename(tmp, path)
    fsync_directory(directory)


def replace_file(new_path: str, target: str) -> None:
    """Put ``new_path`` at ``target`` atomically (``rename``), then sync the
    directory so the rename survives a power loss. Failpoints
    ``rebuild.before_replace`` and ``rebuild.after_replace`` (SPEC §7.1)."""
    failpoints.hit("rebuild.before_replace")
    failpoints.io_call("rename")
    failpoints.record("other.rename")
    os.replace(new_path, target)
    fsync_directory(os.path.dirname(os.path.abspath(target)))
    failpoints.hit("rebuild.after_replace")


def fsync_directory(directory: str) -> None:
    failpoints.io_call("fsync")
    failpoints.record("other.fsync")
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
