"""How a batch crosses a process worker's pipe, its large buffers out of band.

A batch is one :mod:`multiprocessing.connection` message, as ``send_bytes``
writes it and ``recv_bytes`` reads it: a length, then the pickle (and the
ids of its works, see :mod:`.pickling`). A pickle that left large buffers
out of band (pickle protocol 5: a big bytes or bytearray argument or result,
a NumPy array) starts its message with a descriptor instead of the pickle's
own first byte: :data:`_OUT_OF_BAND`, the number of buffers and each one's
size. The buffers' bytes follow the message on the pipe, unframed, back to
back.

Why: a 1 MiB argument copied into its pickle, the pickle copied again to
append the ids, read back in pieces into a growing buffer and copied once
more into the object made four copies in the parent besides the kernel's.
Here the buffers are written from the objects' own memory in one gathered
write with the message (``os.writev``), and each is read into a bytearray of
its exact size, which becomes the object (a bytearray, a NumPy array) or,
for bytes, is copied once into it.

Where ``os.writev`` is missing (Windows), nothing goes out of band:
:data:`OUT_OF_BAND` is False and every batch is a plain message.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
from collections.abc import Sequence
from typing import Any

#: Whether large buffers may travel out of band on this platform.
OUT_OF_BAND = hasattr(os, "writev") and hasattr(os, "readv")

# A pickle's first byte is its PROTO opcode (0x80), never this one.
_OUT_OF_BAND = 0
_DESCRIPTOR = struct.Struct("<BI")  # the mark, then how many buffers
_SIZE = struct.Struct("<QB")  # a buffer's size, and 1 if it is read-only
# multiprocessing.connection's framing, which recv_bytes() reads: a signed
# big-endian length, or -1 and an unsigned 64-bit one past 2 GiB.
_LENGTH = struct.Struct("!i")
_LONG_LENGTH = struct.Struct("!iQ")
# Parts per os.writev call: well below any system's IOV_MAX (1024 on Linux).
_MAX_PARTS = 512


def send(connection: Any, data: bytes, buffers: Sequence[Any] = ()) -> None:
    """Write one batch: its pickle ``data``, then its out-of-band ``buffers``
    (:class:`pickle.PickleBuffer` objects, in the pickle's order).

    Raises:
        OSError: The worker, or the parent, is gone.
    """
    if not buffers:
        connection.send_bytes(data)
        return
    raws = [buffer.raw() for buffer in buffers]
    descriptor = _DESCRIPTOR.pack(_OUT_OF_BAND, len(raws)) + b"".join(
        _SIZE.pack(raw.nbytes, raw.readonly) for raw in raws
    )
    length = len(descriptor) + len(data)
    header = _LENGTH.pack(length) if length <= 0x7FFFFFFF else _LONG_LENGTH.pack(-1, length)
    _write_all(connection.fileno(), [header, descriptor, data, *raws])


def receive(connection: Any) -> tuple[bytes | memoryview, list[bytes | bytearray]]:
    """Read one batch that :func:`send` wrote: its pickle, and the buffers
    for :func:`pickle.loads`, each read into an object of its own (an
    object made of one keeps no other alive): bytes for a read-only buffer,
    which a bytes object is then made of without a copy, else a bytearray.

    Raises:
        EOFError: The other side closed its end before or during the batch.
        OSError: Likewise, or the pipe failed.
    """
    data = connection.recv_bytes()
    if not data or data[0] != _OUT_OF_BAND:
        return data, []
    _, count = _DESCRIPTOR.unpack_from(data)
    offset = _DESCRIPTOR.size
    sizes = []
    for _ in range(count):
        sizes.append(_SIZE.unpack_from(data, offset))
        offset += _SIZE.size
    return memoryview(data)[offset:], _read_buffers(connection.fileno(), sizes)


def _read_buffers(fd: int, sizes: list[tuple[int, int]]) -> list[bytes | bytearray]:
    if not stat.S_ISSOCK(os.fstat(fd).st_mode):
        buffers = [bytearray(size) for size, _ in sizes]
        _read_all(fd, [memoryview(buffer) for buffer in buffers])
        return buffers  # type: ignore[return-value]  # a list of bytearrays is one of either
    # A socket (a duplex Pipe is one on POSIX) can fill a bytes object of the
    # buffer's size in one call (MSG_WAITALL): no zeroed bytearray first,
    # and no copy into the bytes. The object only borrows the descriptor.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fileno=fd)
    try:
        return [
            _receive_bytes(sock, size) if readonly else _receive_bytearray(sock, size)
            for size, readonly in sizes
        ]
    finally:
        sock.detach()


def _receive_bytes(sock: socket.socket, size: int) -> bytes:
    data = sock.recv(size, socket.MSG_WAITALL)
    # Less only at end of file, or if a signal cut the wait short (rare:
    # the rest is then copied on).
    while len(data) < size:
        more = sock.recv(size - len(data), socket.MSG_WAITALL)
        if not more:
            raise EOFError("end of file in the middle of a batch")
        data += more
    return data


def _receive_bytearray(sock: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    while view:
        read = sock.recv_into(view, len(view), socket.MSG_WAITALL)
        if not read:
            raise EOFError("end of file in the middle of a batch")
        view = view[read:]
    return buffer


def _write_all(fd: int, parts: list[Any]) -> None:
    # os.writev may write less than asked (a full pipe, a signal): go on
    # from where it stopped, without copying what is left.
    parts = [part for part in parts if len(part)]
    while parts:
        written = os.writev(fd, parts[:_MAX_PARTS])
        while parts and written >= len(parts[0]):
            written -= len(parts[0])
            del parts[0]
        if written:
            parts[0] = memoryview(parts[0])[written:]


def _read_all(fd: int, views: list[memoryview]) -> None:
    views = [view for view in views if len(view)]
    while views:
        read = os.readv(fd, views[:_MAX_PARTS])
        if not read:
            raise EOFError("end of file in the middle of a batch")
        while views and read >= len(views[0]):
            read -= len(views[0])
            del views[0]
        if read:
            views[0] = views[0][read:]
