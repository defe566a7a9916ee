"""The local spool: records the database could not take, kept on disk in the data folder until it can.

Bitrix24 never re-sends a robot call or an event, so a call the door answers 200 must survive whatever happens next.
When PostgreSQL is unreachable the call is appended here instead, and the 200 goes out only after the record is on
disk (``fsync``). Several calls that arrive together share one write and one ``fsync`` (the same group commit as the
database's), so the spool keeps up with the door.

Layout: ``<data folder>/spool/*.spool``, one *segment* per process that has spooled since it last drained. A segment
is a header and records, each ``REC1``, the payload's length and CRC-32, then the payload (sealed: encrypted and
authenticated with the service's key, as the payload can carry a portal's tokens). A process holds an exclusive
``flock`` on its own segment while it lives; a segment nobody holds belongs to a process that has gone (killed,
crashed, a replaced container on the same volume), and whichever process locks it first drains it. A segment is
created under a temporary name and renamed once locked, so no other process can mistake a new one for an orphan.
A record cut short by a crash (the last one of its segment) fails its length or checksum: it is skipped with a log
line and counted; nothing after it was ever acknowledged.

The spool is bounded (``B24BRIDGE_SPOOL_MAX_MB``): a full one refuses the record (the door then answers 503), and
``b24bridge_spool_bytes`` beside ``b24bridge_spool_capacity_bytes`` says how full it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from b24bridge.observability import get_logger

from .metrics import SPOOL_APPENDED, SPOOL_BYTES, SPOOL_CAPACITY, SPOOL_RECORDS, SPOOL_REFUSED, SPOOL_TORN

log = get_logger(__name__)

try:
    import fcntl
except ImportError:  # Windows: no flock; a process there never adopts another's segment (see _lock)
    fcntl = None  # type: ignore[assignment]

HEADER = b"B24SPOOL1\n"
RECORD = struct.Struct(">4sII")
MAGIC = b"REC1"
SUFFIX = ".spool"
MAX_RECORD = 16 * 1024 * 1024  # a robot call is about 2 KB sealed; anything near this is not one of ours


class SpoolUnavailable(Exception):
    """The record could not be written (the spool is full, or the disk refused); nothing was kept."""


@dataclass
class Segment:
    """One segment file, as its drainer sees it: records up to ``end`` are on disk, ``position`` are drained."""

    path: Path
    fd: int  # holds the flock
    own: bool
    position: int = len(HEADER)
    end: int = len(HEADER)
    records: int = 0  # not yet drained


@dataclass
class _Append:
    blobs: list[bytes]
    future: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Spool:
    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        seal: Callable[[bytes], bytes],
        unseal: Callable[[bytes], bytes],
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.seal = seal
        self.unseal = unseal
        self._own: Segment | None = None
        self._pending: list[_Append] = []
        self._writing = False
        self._foreign_bytes = 0
        SPOOL_CAPACITY.set(max_bytes)

    # --- appending ------------------------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Records are being written, or written and not yet drained, by this process."""
        own = self._own
        return self._writing or bool(self._pending) or (own is not None and own.position < own.end)

    async def append(self, payload: bytes) -> None:
        """Keep ``payload`` on disk; returns once it is there (fsync'd). Raises :class:`SpoolUnavailable`."""
        blob = self.seal(payload)
        if len(blob) > MAX_RECORD:
            raise SpoolUnavailable("the record is too large for the spool")
        waiting = _Append([blob])
        self._pending.append(waiting)
        if not self._writing:
            self._writing = True
            asyncio.get_running_loop().create_task(self._write_pending())
        await waiting.future

    async def _write_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                blobs = [blob for item in batch for blob in item.blobs]
                try:
                    await asyncio.to_thread(self._write, blobs)
                except SpoolUnavailable as exc:
                    SPOOL_REFUSED.inc(len(blobs))
                    for item in batch:
                        item.future.set_exception(SpoolUnavailable(str(exc)))
                    continue
                SPOOL_APPENDED.inc(len(blobs))
                for item in batch:
                    item.future.set_result(None)
        finally:
            self._writing = False
            self._publish()

    def _write(self, blobs: Sequence[bytes]) -> None:
        """In a worker thread: the records at the end of this process's segment, then fsync."""
        data = b"".join(RECORD.pack(MAGIC, len(blob), zlib.crc32(blob)) + blob for blob in blobs)
        if self.used_bytes + len(data) > self.max_bytes:
            raise SpoolUnavailable(f"the spool is full ({self.max_bytes // (1024 * 1024)} MB, B24BRIDGE_SPOOL_MAX_MB)")
        try:
            segment = self._own or self._open_own()
            written = 0
            while written < len(data):
                written += os.write(segment.fd, data[written:])
            os.fsync(segment.fd)
        except OSError as exc:
            if self._own is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._own.fd, self._own.end)  # what was not acknowledged is not kept
            raise SpoolUnavailable(f"the spool cannot be written: {exc.strerror or exc}") from None
        segment.end += len(data)
        segment.records += len(blobs)

    def _open_own(self) -> Segment:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        temporary = self.directory / f".{name}.tmp"
        fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_APPEND, 0o600)
        try:
            _lock(fd)
            os.write(fd, HEADER)
            os.fsync(fd)
            final = self.directory / f"{name}{SUFFIX}"
            os.rename(temporary, final)
            _fsync_directory(self.directory)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        self._own = Segment(final, fd, own=True)
        log.warning("spool: records are kept on disk until the database takes them", segment=str(final))
        return self._own

    # --- draining ---------------------------------------------------------------------------------------------------

    def orphans(self) -> list[Segment]:
        """Segments of processes that have gone, oldest first, each now locked by this process (blocking I/O)."""
        found: list[Segment] = []
        if not self.directory.is_dir():
            return found
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if self._own is not None and path == self._own.path:
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue  # drained by another process just now
            try:
                if not _lock(fd):
                    raise BlockingIOError
                size = os.fstat(fd).st_size
                if not path.exists():  # drained and removed between our open and our lock
                    os.close(fd)
                    continue
            except BlockingIOError:
                os.close(fd)  # its process is alive and drains it itself
                continue
            found.append(Segment(path, fd, own=False, end=size))
        self._foreign_bytes = sum(segment.end for segment in found)
        self._publish()
        return found

    def own(self) -> Segment | None:
        return self._own

    def read(self, segment: Segment, limit: int) -> list[tuple[int, bytes | None]]:
        """Up to ``limit`` records after ``segment.position``: (the offset after each, its payload or None for a
        record that could not be read). A torn or corrupt record ends the segment (blocking I/O)."""
        records: list[tuple[int, bytes | None]] = []
        with open(segment.path, "rb") as file:
            if segment.position == len(HEADER) and file.read(len(HEADER)) != HEADER:
                return self._torn(segment, "not a spool segment")
            offset = segment.position
            file.seek(offset)
            while len(records) < limit and offset < segment.end:
                head = file.read(RECORD.size)
                if len(head) < RECORD.size:
                    return [*records, *self._torn(segment, "a record header cut short", offset)]
                magic, length, checksum = RECORD.unpack(head)
                blob = file.read(length) if magic == MAGIC and length <= MAX_RECORD else b""
                if magic != MAGIC or len(blob) < length or zlib.crc32(blob) != checksum:
                    return [*records, *self._torn(segment, "a record cut short or corrupt", offset)]
                offset += RECORD.size + length
                try:
                    records.append((offset, self.unseal(blob)))
                except ValueError:
                    log.error(
                        "spool: a record could not be unsealed (another key?); skipped", segment=str(segment.path)
                    )
                    SPOOL_TORN.inc()
                    records.append((offset, None))
        return records

    def _torn(self, segment: Segment, what: str, offset: int | None = None) -> list[tuple[int, bytes | None]]:
        log.error(
            f"spool: {what}; the rest of the segment is skipped",
            segment=str(segment.path),
            offset=offset,
            size=segment.end,
        )
        SPOOL_TORN.inc()
        return [(segment.end, None)]

    def advance(self, segment: Segment, position: int, records: int) -> None:
        segment.position = position
        segment.records = max(0, segment.records - records)
        self._publish()

    def release(self, segment: Segment) -> None:
        """A drained segment: removed, its lock let go (blocking I/O). This process's own is removed only when
        nothing is being written to it."""
        if segment.own:
            if self.busy:
                return
            self._own = None
        else:
            self._foreign_bytes = max(0, self._foreign_bytes - segment.end)
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()
        with contextlib.suppress(OSError):
            _fsync_directory(self.directory)
        os.close(segment.fd)
        self._publish()

    def close(self) -> None:
        """At shutdown: let go of this process's segment (it stays on disk if records are left in it)."""
        own, self._own = self._own, None
        if own is None:
            return
        if own.position >= own.end and not self._pending:
            with contextlib.suppress(FileNotFoundError):
                own.path.unlink()
        os.close(own.fd)

    # --- accounting -------------------------------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        own = self._own
        return self._foreign_bytes + (own.end if own is not None else 0)

    def _publish(self) -> None:
        SPOOL_BYTES.set(self.used_bytes)
        own = self._own
        SPOOL_RECORDS.set(own.records if own is not None else 0)


def _lock(fd: int) -> bool:
    """Take the segment's exclusive lock without waiting; False where there are no locks to take (then a segment of
    another process is never taken for an orphan: its owner may be alive)."""
    if fcntl is None:
        return False
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return True


def _fsync_directory(directory: Path) -> None:
    if os.name == "nt":
        return  # a directory cannot be opened (nor fsync'd) there
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
