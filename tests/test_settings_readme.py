"""The README documents every setting."""

from __future__ import annotations

import re
from pathlib import Path

from referendum_service.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_lists_every_setting_with_its_variable() -> None:
    """Each Settings field has a row in the README's settings table naming its variable."""
    text = README.read_text(encoding="utf-8")
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| `(\w+)` \|", text, re.M)}
    for name in Settings().names():
        assert name in rows, f"README settings table lacks {name}"
        expected = "DATABASE_URL" if name == "database_url" else "REFERENDUM_" + name.upper()
        assert rows[name] == expected
