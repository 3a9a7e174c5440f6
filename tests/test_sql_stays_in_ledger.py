"""SQL is written only in exportmon/ledger/: everything else uses its named queries."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

import exportmon
from exportmon.ledger import Ledger

PACKAGE = Path(exportmon.__file__).parent
LEDGER = PACKAGE / "ledger"


def _statements(case: Callable[[str], str]) -> str:
    """A pattern of SQL statements whose keywords are written in ``case``."""
    k = case
    return (
        rf"\b({k('select')}\s.+?\s{k('from')}\s|{k('insert')}\s+({k('or')}\s+\w+\s+)?{k('into')}\s"
        rf"|{k('update')}\s+\w+\s+{k('set')}\s|{k('delete')}\s+{k('from')}\s"
        rf"|{k('create')}\s+({k('unique')}\s+)?({k('table')}|{k('index')}|{k('view')})\s"
        rf"|{k('alter')}\s+{k('table')}\s|{k('drop')}\s+({k('table')}|{k('index')})\s"
        rf"|{k('pragma')}\s+\w+)"
    )


#: SQL in upper or in lower case (prose that starts with "Select the ..." is not SQL).
SQL = re.compile(f"{_statements(str.upper)}|{_statements(str.lower)}", re.DOTALL)


def sql_outside_ledger(root: Path) -> list[str]:
    """``file:line: text`` for every string literal or sqlite3 import outside the ledger."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.is_relative_to(root / "ledger"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        parts_of_fstrings = {
            id(part)
            for node in ast.walk(tree)
            if isinstance(node, ast.JoinedStr)
            for part in node.values
        }
        for node in ast.walk(tree):
            if id(node) in parts_of_fstrings:
                continue
            where = f"{path.relative_to(root.parent)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if SQL.search(node.value):
                    found.append(f"{where}: {node.value[:60]!r}")
            elif isinstance(node, ast.JoinedStr):
                text = "".join(
                    part.value if isinstance(part, ast.Constant) else "x" for part in node.values
                )
                if SQL.search(text):
                    found.append(f"{where}: {text[:60]!r}")
            elif isinstance(node, ast.Import | ast.ImportFrom):
                names = [alias.name for alias in node.names]
                module = getattr(node, "module", None) or ""
                if "sqlite3" in names or module.split(".")[0] == "sqlite3":
                    found.append(f"{where}: imports sqlite3")
    return found


def test_no_sql_outside_the_ledger_package():
    assert sql_outside_ledger(PACKAGE) == []


def test_the_check_sees_sql_written_anywhere_else(tmp_path):
    root = tmp_path / "exportmon"
    (root / "ledger").mkdir(parents=True)
    (root / "ledger" / "db.py").write_text('Q = "SELECT * FROM exports"\n')
    (root / "status.py").write_text(
        "import sqlite3\n"
        'A = "select id from mails where state = ?"\n'
        'B = f"UPDATE exports SET {column} = ?"\n'
        'C = "Select the files from the folder"\n'
        'D = "delete from alerts"\n'
    )
    found = sql_outside_ledger(root)
    assert [line.split(": ")[0] for line in found] == [
        "exportmon/status.py:1",
        "exportmon/status.py:2",
        "exportmon/status.py:3",
        "exportmon/status.py:5",
    ]


def test_the_ledger_offers_no_raw_query():
    assert not hasattr(Ledger, "query")
