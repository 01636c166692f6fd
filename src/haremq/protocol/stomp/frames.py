"""STOMP frames: an incremental parser and a serializer for versions 1.0, 1.1 and 1.2.

Wire format (all three versions)::

    COMMAND EOL
    name:value EOL        (zero or more headers)
    EOL                   (blank line ends the header block)
    body NUL              (body is raw bytes)
    EOL*                  (optional; between frames a bare EOL is a heart-beat)

- EOL is LF; 1.2 also allows CR LF. We accept CR LF in 1.0 too (no spec says otherwise) and in
  CONNECT frames; in 1.1 a CR before LF is part of the header value, as that spec says.
- Header escaping: 1.0 has none; 1.1 escapes ``\\\\ \\n \\c`` (backslash, LF, colon); 1.2 adds ``\\r``.
  CONNECT and CONNECTED frames are never escaped (1.2 spec), so a CONNECT is parsed raw whatever the
  version. An undefined escape sequence is a fatal protocol error (1.2 spec).
- Repeated header: the first occurrence wins (1.1+ spec; we apply it to 1.0 too).
- ``content-length`` (octets) makes the body exact: it may contain NUL, and the byte after it must
  be NUL. Without it the body runs to the first NUL.

Limits are checked as bytes arrive, before a frame is complete, so a peer cannot make us buffer an
endless header block or body: ``max_header_size`` (command + headers), ``max_headers`` (count) and
``max_body`` (octets). Breaking one yields a ``ParseError`` carrying the haremq error to send; the
parser then stops (the session closes the connection).

The parser never raises and never signals "need more data" by exception: ``feed`` returns the
frames that are complete and keeps the rest buffered. Scanning resumes where it stopped, so a large
body arriving in many small reads costs O(n), not O(n^2).
"""

from __future__ import annotations

import dataclasses

from haremq.errors import ContentTooLarge, FrameError, HareError, SyntaxError_

V10, V11, V12 = "1.0", "1.1", "1.2"
VERSIONS = (V10, V11, V12)

# commands whose headers are never escaped
_RAW_COMMANDS = frozenset({"CONNECT", "STOMP", "CONNECTED"})

_UNESCAPE_11 = {ord("\\"): "\\", ord("n"): "\n", ord("c"): ":"}
_UNESCAPE_12 = {**_UNESCAPE_11, ord("r"): "\r"}
_ESCAPE_11 = str.maketrans({"\\": "\\\\", "\n": "\\n", ":": "\\c"})
_ESCAPE_12 = str.maketrans({"\\": "\\\\", "\n": "\\n", ":": "\\c", "\r": "\\r"})
_ESCAPE_10 = str.maketrans({"\n": " ", "\r": " "})  # 1.0 cannot carry them at all; keep the frame valid


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    """One STOMP frame. ``headers`` keeps the first occurrence of each name, in arrival order."""

    command: str
    headers: dict[str, str]
    body: bytes = b""


@dataclasses.dataclass(frozen=True, slots=True)
class ParseError:
    """The input is not STOMP (or breaks a limit); ``error`` is what the ERROR frame reports."""

    error: HareError
    receipt: str | None = None


class FrameParser:
    """Bytes in, ``Frame``/``ParseError`` out. ``version`` selects header unescaping."""

    def __init__(self, *, max_header_size: int = 65536, max_headers: int = 1000,
                 max_body: int = 128 * 1024 * 1024) -> None:
        self.version = V10
        self.max_header_size = max_header_size
        self.max_headers = max_headers
        self.max_body = max_body
        self.heartbeats = 0  # EOLs seen between frames
        self.failed = False
        self._buf = bytearray()
        self._scan = 0  # where to resume looking for the end of the header block / body
        self._pending: tuple[str, dict[str, str], int, int | None] | None = None  # header block parsed

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | ParseError]:
        """Add bytes; return every frame now complete (and at most one ``ParseError``, last)."""
        if self.failed:
            return []
        buf = self._buf
        buf += data
        out: list[Frame | ParseError] = []
        pos = 0
        n = len(buf)
        while pos < n:
            pending = self._pending
            if pending is None:
                # heart-beats / optional EOLs between frames
                c = buf[pos]
                if c == 10:
                    self.heartbeats += 1
                    pos += 1
                    continue
                if c == 13:
                    if pos + 1 >= n:
                        break
                    if buf[pos + 1] == 10:
                        self.heartbeats += 1
                        pos += 2
                        continue
                    return self._fail(out, FrameError("bare CR outside a frame"))
                end = self._header_end(buf, pos)
                if end is None:
                    if n - pos > self.max_header_size:
                        return self._fail(out, FrameError(
                            f"header block exceeds {self.max_header_size} bytes"))
                    break
                head_end, body_start = end
                if head_end - pos > self.max_header_size:
                    return self._fail(out, FrameError(f"header block exceeds {self.max_header_size} bytes"))
                parsed = self._parse_head(bytes(buf[pos:head_end]))
                if isinstance(parsed, ParseError):
                    return self._fail(out, parsed.error, parsed.receipt)
                command, headers, length = parsed
                pending = self._pending = (command, headers, body_start, length)
                self._scan = body_start
            command, headers, body_start, length = pending
            if length is not None:
                stop = body_start + length
                if stop >= n:
                    break
                if buf[stop] != 0:
                    return self._fail(out, FrameError("frame body not terminated by NUL after content-length"),
                                      headers.get("receipt"))
            else:
                stop = buf.find(b"\x00", self._scan)
                if stop < 0:
                    self._scan = n
                    if n - body_start > self.max_body:
                        return self._fail(out, ContentTooLarge(
                            f"frame body exceeds {self.max_body} bytes"), headers.get("receipt"))
                    break
                if stop - body_start > self.max_body:
                    return self._fail(out, ContentTooLarge(f"frame body exceeds {self.max_body} bytes"),
                                      headers.get("receipt"))
            out.append(Frame(command, headers, bytes(buf[body_start:stop])))
            self._pending = None
            pos = stop + 1
            if command in _RAW_COMMANDS:
                # the session negotiates the version on CONNECT; frames after it in this same read
                # must be parsed with the new escaping, so stop here and let the caller come back
                break
        if pos:
            del buf[:pos]
            if self._pending is not None:
                c2, h2, b2, l2 = self._pending
                self._pending = (c2, h2, b2 - pos, l2)
            self._scan = max(0, self._scan - pos)
        return out

    def resume(self) -> list[Frame | ParseError]:
        """Parse what is already buffered (after ``feed`` stopped at a CONNECT)."""
        return self.feed(b"")

    def _fail(self, out: list[Frame | ParseError], err: HareError,
              receipt: str | None = None) -> list[Frame | ParseError]:
        out.append(ParseError(err, receipt))
        self.failed = True
        self._buf = bytearray()
        self._pending = None
        return out

    def _header_end(self, buf: bytearray, pos: int) -> tuple[int, int] | None:
        """(end of header block, start of body), or None when the blank line has not arrived."""
        # Both searches are bounded: by the header limit (a longer block is an error anyway) and the
        # CR LF one by the LF LF hit, so a read holding many frames is scanned once, not per frame.
        start = max(pos, self._scan - 3)
        limit = min(len(buf), pos + self.max_header_size + 3)
        i = buf.find(b"\n\n", start, limit)
        j = buf.find(b"\n\r\n", start, limit if i < 0 else i + 1)
        if i < 0 and j < 0:
            self._scan = max(pos, limit)
            return None
        if j >= 0:
            return j, j + 3
        return i, i + 2

    def _parse_head(self, raw: bytes) -> tuple[str, dict[str, str], int | None] | ParseError:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return ParseError(FrameError("frame headers are not valid UTF-8"))
        lines = text.split("\n")
        command = lines[0].removesuffix("\r")
        if not command or not command.isalpha() or not command.isupper():
            return ParseError(FrameError(f"malformed command line {command[:40]!r}"))
        if len(lines) - 1 > self.max_headers:
            return ParseError(FrameError(f"more than {self.max_headers} headers"))
        headers: dict[str, str] = {}
        table = None
        if command not in _RAW_COMMANDS:
            table = _UNESCAPE_12 if self.version == V12 else _UNESCAPE_11 if self.version == V11 else None
        # 1.1 defines EOL as LF only, so there a CR is header data; 1.2 (and, leniently, 1.0 and
        # every CONNECT, whose version is not known yet) allows CR LF
        strip_cr = self.version != V11 or command in _RAW_COMMANDS
        for line in lines[1:]:
            if strip_cr:
                line = line.removesuffix("\r")
            colon = line.find(":")
            if colon <= 0:
                return ParseError(FrameError(f"malformed header line {line[:40]!r}"), headers.get("receipt"))
            name = line[:colon]
            value = line[colon + 1:]
            if table is not None and "\\" in line:
                uname, uvalue = _unescape(name, table), _unescape(value, table)
                if uname is None or uvalue is None:
                    return ParseError(SyntaxError_(f"undefined escape sequence in header line {line[:40]!r}"),
                                      headers.get("receipt"))
                name, value = uname, uvalue
            if name not in headers:
                headers[name] = value
        length: int | None = None
        cl = headers.get("content-length")
        if cl is not None:
            cl = cl.strip()
            if not cl.isdigit() or not cl.isascii():
                return ParseError(FrameError(f"invalid content-length {cl[:20]!r}"), headers.get("receipt"))
            length = int(cl)
            if length > self.max_body:
                return ParseError(ContentTooLarge(f"content-length {length} exceeds {self.max_body} bytes"),
                                  headers.get("receipt"))
        return command, headers, length


def _unescape(s: str, table: dict[int, str]) -> str | None:
    out: list[str] = []
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            if i + 1 >= n:
                return None
            r = table.get(ord(s[i + 1]))
            if r is None:
                return None
            out.append(r)
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def escape(value: str, version: str) -> str:
    if "\\" not in value and "\n" not in value and ":" not in value and "\r" not in value:
        return value  # the common case, ~5x cheaper than translate
    if version == V12:
        return value.translate(_ESCAPE_12)
    if version == V11:
        return value.translate(_ESCAPE_11)
    return value.translate(_ESCAPE_10)


def serialize(command: str, headers: list[tuple[str, str]] | dict[str, str], body: bytes = b"",
              version: str = V12) -> bytes:
    """One frame as bytes. ``content-length`` is added when there is a body (it may hold NUL)."""
    items = headers.items() if isinstance(headers, dict) else headers
    parts = [command]
    if command in _RAW_COMMANDS:
        parts.extend(f"{k}:{v}" for k, v in items)
    else:
        parts.extend(f"{escape(k, version)}:{escape(v, version)}" for k, v in items)
    if body:
        parts.append(f"content-length:{len(body)}")
    parts.append("\n")
    return "\n".join(parts).encode("utf-8") + body + b"\x00"
