"""Reading the files users hand us (specs, data, seeds, instruction sets) as UTF-8 text.

Bytes that are not UTF-8 become a one-line error naming the file and line; so do lone
surrogates (JSON escapes like "\\ud800" decode to them, and the tokenizer or HTTP client would
later fail on them with a traceback that names no file).
"""

from __future__ import annotations

from pathlib import Path

from alpaca_jobs.common.errors import UserError


def read_utf8(path: str | Path, error: type[UserError] = UserError) -> str:
    """The file's text, or ``error("FILE:LINE: not UTF-8 ...")``."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                    f"{exc.start}); save the file as UTF-8") from None


def check_text(value: str, where: str, error: type[UserError] = UserError) -> str:
    """``value`` unchanged if it can be encoded as UTF-8, else an error naming ``where``."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise error(f"{where}: contains a lone surrogate (U+{ord(value[exc.start]):04X}); "
                    "fix the escape sequence in the file") from None
    return value
