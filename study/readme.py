"""Generated blocks of the README: the text between ``<!-- NAME ... -->`` and ``<!-- /NAME -->``."""

from __future__ import annotations

import re
from pathlib import Path


def replace_block(readme: Path, name: str, text: str) -> None:
    """Put ``text`` into ``readme``'s block ``name`` (the marker lines stay)."""
    block = re.compile(rf"(<!-- {re.escape(name)}[^\n]*-->\n).*?(<!-- /{re.escape(name)} -->)", re.DOTALL)
    content = readme.read_text()
    if not block.search(content):
        raise SystemExit(f"error: {readme} has no <!-- {name} --> block")
    readme.write_text(block.sub(lambda m: f"{m[1]}{text}\n{m[2]}", content))
