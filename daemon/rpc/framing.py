"""Newline-delimited JSON framing with a bound on the line length."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

import trio

MAX_LINE = 64 * 1024


@dataclass(frozen=True)
class TooLong:
    """A line that exceeded the bound; its bytes were dropped up to the next newline."""

    size: int


async def read_lines(
    stream: trio.abc.ReceiveStream, max_line: int = MAX_LINE
) -> AsyncGenerator[bytes | TooLong, None]:
    """Yield complete lines (without the newline); a too-long line yields TooLong once."""
    buf = bytearray()
    dropping = 0  # >0: inside an over-long line, this many bytes dropped so far
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return  # EOF; a partial last line is dropped
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                piece = chunk[start:]
                if dropping:
                    dropping += len(piece)
                elif len(buf) + len(piece) > max_line:
                    dropping = len(buf) + len(piece)
                    buf.clear()
                else:
                    buf += piece
                break
            piece = chunk[start:nl]
            start = nl + 1
            if dropping:
                yield TooLong(dropping + len(piece))
                dropping = 0
            elif len(buf) + len(piece) > max_line:
                size = len(buf) + len(piece)
                buf.clear()
                yield TooLong(size)
            else:
                buf += piece
                line = bytes(buf)
                buf.clear()
                yield line
