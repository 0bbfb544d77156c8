"""Where the benches put their figures: a named section of a Markdown file, replaced on each run."""
from __future__ import annotations

from pathlib import Path


def write_section(path: Path, name: str, text: str) -> None:
    """Replace the section between `<!-- name:start -->` and `<!-- name:end -->` of `path`, or append it."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    old = path.read_text(encoding="utf-8") if path.is_file() else "# Performance\n"
    section = f"{start}\n{text}{end}"
    if start in old and end in old:
        new = old[: old.index(start)] + section + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(new, encoding="utf-8")
