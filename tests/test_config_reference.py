"""docs/config.md is generated from the schema and kept in step with it, the way the
completion scripts are; every option has its doc there."""

from __future__ import annotations

from pathlib import Path

from exportmon.config.reference import layout, render, scalar_options
from exportmon.config.schema import toml_name

PAGE = Path(__file__).parent.parent / "docs" / "config.md"


def test_config_reference_is_in_step_with_the_schema():
    assert PAGE.read_text() == render(), (
        f"{PAGE} is out of date: run `python -m exportmon.config.reference > {PAGE}`"
    )


def test_every_table_and_option_is_documented_with_type_default_and_doc():
    text = render()
    for table in layout():
        assert (f"## `{table.header}`" if table.header else "## Top level") in text
        for f in scalar_options(table):
            assert f.metadata.get("doc"), f"{table.header or 'top level'} {f.name} has no doc"
            row = next(
                (line for line in text.splitlines() if line.startswith(f"| `{toml_name(f)}` |")),
                None,
            )
            assert row is not None and row.count(" | ") >= 3, f.name


def test_the_reference_says_what_runs_code_and_what_is_secret():
    text = render()
    hook = next(line for line in text.splitlines() if line.startswith("| `value_hook` |"))
    assert "**Runs code.**" in hook and "standard library" in hook
    password = next(line for line in text.splitlines() if line.startswith("| `password` |"))
    assert "**Secret**" in password and "`password_env`" in password
    assert "by kind — imap:" in text  # the archive default differs per source kind
