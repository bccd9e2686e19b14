"""Write the settings table of docs/operations.md from ``Settings``: ``python scripts/settings_doc.py``.

``--check`` exits 1 (printing a diff) when the committed table differs from the code, which is what
the docs test runs. The table sits between two HTML comments, so the prose around it is hand-written.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "operations.md"
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def rendered_default(value: object) -> str:
    """A default the way the table writes it: JSON for containers, lower-case booleans, "unset" for None."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        specs = [v.model_dump(include={"name", "version", "source"}) for v in value]
        return f"`{json.dumps(specs, separators=(',', ':'))}`"
    if isinstance(value, dict | list):
        return f"`{json.dumps(value, separators=(',', ':'))}`"
    return f"`{value}`"


def settings_table() -> str:
    sys.path.insert(0, str(ROOT))
    from service.settings import Settings

    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = rendered_default(field.get_default(call_default_factory=True))
        rows.append(f"| `ML_API_{name.upper()}` | {default} | {field.description} |")
    return "\n".join(rows)


def with_table(doc: str, table: str) -> str:
    before, rest = doc.split(START, 1)
    _old, after = rest.split(END, 1)
    return f"{before}{START}\n{table}\n{END}{after}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the doc is stale")
    args = parser.parse_args(argv)
    current = DOC.read_text()
    wanted = with_table(current, settings_table())
    if args.check:
        if current != wanted:
            diff = difflib.unified_diff(current.splitlines(True), wanted.splitlines(True), "docs", "code")
            sys.stdout.writelines(diff)
            return 1
        return 0
    DOC.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
