"""Text from outside (tensor names in a file, a module's repr, an exception's message) made safe
to print: control characters would let a crafted file retitle the terminal (ESC ] 0;…), clear
it (ESC [ 2J) or reorder what is shown (bidi overrides), and a newline would break the promise
of one-line errors. Each such character is shown as its Python escape instead."""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, the line/paragraph separators and the bidi embeddings, overrides
# and isolates (Unicode TR9): everything a terminal acts on or reorders rather than shows
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every control character written as its escape (ESC -> \\x1b, U+202E -> \\u202e)."""
    return _UNSAFE.sub(_escape, text)
