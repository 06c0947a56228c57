"""Bytes of an HL7 v2 message <-> text, and acknowledgements.

Chinese LIS and HIS systems send UTF-8 or GB18030 (GBK, GB2312 are subsets). MSH-18 names
the character set when the sender fills it in; otherwise valid UTF-8 is taken as UTF-8 and
anything else as GB18030, which decodes every byte sequence GBK systems produce.
"""

from __future__ import annotations

import re
from datetime import tzinfo

from hub import clock
from hub.clock import CONSORTIUM_TZ

START, END = b"\x0b", b"\x1c\x0d"
_CHARSETS = {"UNICODE UTF-8": "utf-8", "UTF-8": "utf-8", "GB18030": "gb18030",
             "GB 18030-2000": "gb18030", "GBK": "gb18030", "GB2312": "gb18030",
             "GB 2312": "gb18030", "ASCII": "ascii", "8859/1": "latin-1"}


def declared_charset(raw: bytes) -> str | None:
    """MSH-18, read from the raw bytes (the field is ASCII whatever the encoding)."""
    head = raw.split(b"\r", 1)[0].split(b"\n", 1)[0]
    fields = head.split(b"|")
    if len(fields) > 17 and fields[17].strip():
        return _CHARSETS.get(fields[17].decode("ascii", "replace").strip().upper())
    return None


def decode(raw: bytes) -> tuple[str, str]:
    """(text, encoding used)."""
    declared = declared_charset(raw)
    if declared:
        try:
            return raw.decode(declared), declared
        except UnicodeDecodeError:
            pass  # a wrong MSH-18 is common; fall through to detection
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return raw.decode("gb18030", errors="replace"), "gb18030"


def _esc(text: str) -> str:
    """HL7 escapes for the delimiters, so a reason never breaks the ACK's structure."""
    return re.sub(r"[|^~\\&\r\n]", lambda m: {"|": "\\F\\", "^": "\\S\\", "~": "\\R\\",
                                             "\\": "\\E\\", "&": "\\T\\"}.get(m[0], " "),
                  text)


def ack(text: str, code: str, reason: str = "", encoding: str = "utf-8",
        tz: tzinfo = CONSORTIUM_TZ) -> bytes:
    """An ACK for ``text`` (``AA``, ``AE`` or ``AR``) with the reason in MSA-3 and ERR; its
    MSH-7 is a local time of ``tz``, the zone the facility's systems read times in."""
    head = text.split("\r", 1)[0].split("\n", 1)[0] if text.startswith("MSH") else ""
    f = head.split("|") if head else []

    def field(n: int) -> str:  # MSH-n is f[n-1]: MSH-1 is the field separator itself
        return f[n - 1] if len(f) >= n else ""

    now = clock.now().astimezone(tz).strftime("%Y%m%d%H%M%S")
    trigger = field(9).split("^")[1] if "^" in field(9) else ""
    control = field(10)
    version = field(12) or "2.5.1"
    msh = "|".join(["MSH", "^~\\&", field(5) or "HUB", field(6) or "HIE", field(3),
                    field(4), now, "", f"ACK^{trigger}^ACK" if trigger else "ACK",
                    f"ACK{now}{abs(hash(control)) % 10000:04d}", "P", version])
    if len(f) >= 18 and field(18):
        msh += "|" * 6 + field(18)
    segments = [msh, f"MSA|{code}|{control}|{_esc(reason)[:200]}"]
    if code != "AA":
        severity = "E"
        segments.append(f"ERR||||{severity}|||{_esc(reason)}")
    return ("\r".join(segments) + "\r").encode(encoding, errors="replace")


def frame(payload: bytes) -> bytes:
    return START + payload + END


def split_file(raw: bytes) -> list[bytes]:
    """Messages in a file: MLLP-framed, or one after another each starting with MSH."""
    if START in raw:
        return [m.strip(b"\r\n") for m in raw.replace(START, b"").split(END) if m.strip()]
    text = raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    parts = re.split(rb"\r(?=MSH\|)", text)
    return [p.strip(b"\r") for p in parts if p.strip(b"\r")]
