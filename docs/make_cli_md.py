"""Regenerate docs/cli.md from the commands' own --help (tests/test_docs.py checks they agree)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from sorter.cli import cli

COMMANDS = [[], ["train"], ["classify"], ["evaluate"], ["review"], ["learn"], ["prelabel"], ["live"]]


def render() -> str:
    parts = [
        "# Command reference\n\nGenerated from `--help` by `docs/make_cli_md.py`; do not edit by hand.\n"
    ]
    for cmd in COMMANDS:
        text = CliRunner().invoke(cli, [*cmd, "--help"], prog_name="photosort", terminal_width=100).output
        parts.append(f"## photosort {' '.join(cmd)}".rstrip() + f"\n\n```\n{text.rstrip()}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    (Path(__file__).parent / "cli.md").write_text(render())
