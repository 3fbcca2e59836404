"""Records file I/O: a plain ``records.jsonl`` or a compressed ``records.jsonl.zst`` /
``records.jsonl.gz``, appended one record at a time and read back as a stream of lines.

A compressed file is a sequence of frames (zstd) or members (gzip), one per writer
session: each record is flushed as a whole block as soon as it is appended (a reader, or a
resume after a kill, sees every record written so far), and :meth:`RecordFile.close` ends
the frame. A killed writer leaves its frame unfinished; :class:`LineReader` notes that
(``clean`` is False) so the resume repair can rewrite the intact records before appending.
"""

from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

RECORDS_FILE = "records.jsonl"
Compression = Literal["zst", "gz"]
COMPRESSIONS: tuple[Compression, ...] = ("zst", "gz")
_CHUNK = 1 << 20


def records_file(out_dir: str | os.PathLike[str], compress: Compression | None = None) -> Path:
    """The records file of an output directory: the one already there (plain, ``.zst`` or
    ``.gz``), else the one ``compress`` names. Resume keeps a directory's first choice."""
    d = Path(out_dir)
    for suffix in ("", ".zst", ".gz"):
        if (d / (RECORDS_FILE + suffix)).exists():
            return d / (RECORDS_FILE + suffix)
    return d / (RECORDS_FILE + (f".{compress}" if compress else ""))


def compression_of(path: str | os.PathLike[str]) -> Compression | None:
    """``"zst"`` / ``"gz"`` from a file name's suffix, None for a plain file."""
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix if suffix in COMPRESSIONS else None


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "records.jsonl.zst needs the zstandard package: pip install 'toa-graph[zstd]' "
            "(or use gzip: --compress gz)"
        ) from exc
    return zstandard


def _compressor(kind: Compression) -> tuple[Callable[[bytes], bytes], Callable[[], bytes]]:
    """(compress one record and flush it as a whole block, end the frame)."""
    if kind == "zst":
        zstd = _zstd()
        c = zstd.ZstdCompressor(level=3).compressobj()
        return (
            lambda data: c.compress(data) + c.flush(zstd.COMPRESSOBJ_FLUSH_BLOCK),
            lambda: c.flush(zstd.COMPRESSOBJ_FLUSH_FINISH),
        )
    g = zlib.compressobj(6, zlib.DEFLATED, 31)
    return (lambda data: g.compress(data) + g.flush(zlib.Z_SYNC_FLUSH), lambda: g.flush())


def _decompressor(kind: Compression) -> Any:
    """An object with ``decompress(bytes)``, ``eof`` and ``unused_data``."""
    if kind == "zst":
        return _zstd().ZstdDecompressor().decompressobj()
    return zlib.decompressobj(31)


class RecordFile:
    """Appends whole records (already encoded lines) to a records file, plain or compressed
    by its suffix: one ``write`` per record, flushed at once (fsynced when ``fsync``).
    ``bytes_written`` counts the bytes that reached the file."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.bytes_written = 0
        kind = compression_of(self.path)
        self._codec = _compressor(kind) if kind else None
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, line: bytes) -> int:
        data = self._codec[0](line) if self._codec else line
        self._write(data)
        return len(data)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        if self.fsync:
            os.fsync(self._fd)
        self.bytes_written += len(data)

    def close(self) -> None:
        if self._fd >= 0:
            try:
                if self._codec is not None:
                    self._write(self._codec[1]())
            finally:
                os.close(self._fd)
                self._fd = -1


class LineReader:
    """The lines of a records file, decompressed as a stream (each with its newline; a
    torn last line without).

    After iterating, ``clean`` says whether the last compressed frame was finished and
    readable (always True for a plain file): False is a killed writer's torn tail.
    A damaged frame followed by another is not the end: what it holds before the damage
    is read, a line the damage cut is ended there (it reads as an unreadable line), its
    bytes up to the next frame are skipped and noted in ``damaged`` (``(start, end)``
    offsets in the file), and reading goes on with the next frame."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.kind = compression_of(self.path)
        self.clean = True
        self.damaged: list[tuple[int, int]] = []

    def __iter__(self) -> Iterator[bytes]:
        buf = b""
        for chunk in self._chunks():
            buf += chunk
            start = 0
            while (nl := buf.find(b"\n", start)) >= 0:
                yield buf[start : nl + 1]
                start = nl + 1
            buf = buf[start:]
        if buf:
            yield buf

    def _chunks(self) -> Iterator[bytes]:
        with self.path.open("rb") as f:
            if self.kind is None:
                while chunk := f.read(_CHUNK):
                    yield chunk
                return
            start = 0
            while (bad := (yield from self._frames(f, start))) is not None:
                frame, emitted, raised = bad
                if raised:  # the blocks before the damage are readable
                    yield from self._salvage(f, frame, emitted)
                nxt = _find(f, _MAGIC[self.kind], frame + 1)
                if nxt is None:  # the last frame: torn by a killed writer (or damaged)
                    self.clean = False
                    return
                self.damaged.append((frame, nxt))
                yield b"\n"  # a line the damage cut ends here
                start = nxt

    def _frames(
        self, f: BinaryIO, start: int
    ) -> Generator[bytes, None, tuple[int, int, bool] | None]:
        """Decompress the frames from offset ``start`` on; ``None`` at a clean end, else
        the failing frame's (start, bytes of it yielded, whether it raised)."""
        assert self.kind is not None
        f.seek(start)
        dec, frame, pos, emitted, fed = _decompressor(self.kind), start, start, 0, False
        while raw := f.read(_CHUNK):
            while raw:
                try:
                    out = dec.decompress(raw)
                except Exception:  # zlib.error / zstd.ZstdError: a damaged frame
                    return frame, emitted, True
                fed = True
                emitted += len(out)
                yield out
                if not dec.eof:
                    pos += len(raw)
                    break
                pos += len(raw) - len(dec.unused_data)
                raw, dec, frame, emitted, fed = (
                    dec.unused_data,
                    _decompressor(self.kind),
                    pos,
                    0,
                    False,
                )
        return (frame, emitted, False) if fed else None

    def _salvage(self, f: BinaryIO, start: int, emitted: int) -> Iterator[bytes]:
        """The damaged frame at ``start`` decoded again up to the damage (found to the
        piece, then fed a byte at a time): what it holds past the ``emitted`` bytes
        already read."""
        assert self.kind is not None
        probe = self._feed(_decompressor(self.kind), f, start, _PIECE)
        while True:
            try:
                next(probe)
            except StopIteration as end:
                failed = end.value
                break
        if failed is None:
            return
        dec, seen = _decompressor(self.kind), 0
        for out in itertools.chain(
            self._feed(dec, f, start, _CHUNK, stop=failed),
            self._feed(dec, f, failed, 1, stop=failed + _PIECE),
        ):
            if seen + len(out) > emitted:
                yield out[max(0, emitted - seen) :]
            seen += len(out)

    @staticmethod
    def _feed(
        dec: Any, f: BinaryIO, start: int, step: int, stop: int | None = None
    ) -> Generator[bytes, None, int | None]:
        """Feed ``dec`` the bytes of ``f`` from ``start`` (to ``stop``), ``step`` at a
        time, yielding what it decodes; the offset of the piece it failed on, else None."""
        f.seek(start)
        pos = start
        while not dec.eof and (stop is None or pos < stop):
            piece = f.read(step if stop is None else min(step, stop - pos))
            if not piece:
                return None
            try:
                out = dec.decompress(piece)
            except Exception:
                return pos
            pos += len(piece)
            yield out
        return None


_PIECE = 4096
_MAGIC: dict[Compression, bytes] = {"zst": b"\x28\xb5\x2f\xfd", "gz": b"\x1f\x8b\x08"}
"""How a zstd frame / gzip member starts."""


def _find(f: BinaryIO, magic: bytes, start: int) -> int | None:
    """The offset of the first ``magic`` at or after ``start`` in ``f``, else None."""
    f.seek(start)
    pos, tail = start, b""
    while chunk := f.read(_CHUNK):
        buf = tail + chunk
        if (i := buf.find(magic)) >= 0:
            return pos - len(tail) + i
        tail = buf[-(len(magic) - 1) :]
        pos += len(chunk)
    return None
