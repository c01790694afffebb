"""What the ``photosort`` commands share: options worded once, and named errors as exit codes."""

from __future__ import annotations

import sys
from pathlib import Path

import click

EXIT_HELP = """
Exit status: 0 done, 3 done but some files had problems (listed, and in manifest.csv),
1 failed, 130 interrupted (run the same command again to resume)."""

# Options several commands share, defined once so their wording stays the same everywhere.
model_option = click.option(
    "--model",
    "model",
    default="runs/photosort",
    show_default=True,
    type=click.Path(path_type=Path),
    help="A trained model folder (from photosort train).",
)
device_option = click.option(
    "--device", default=None, help="cpu, 0 (first GPU), mps ... [default: a GPU if present, else cpu]"
)


def wandb_option(help_text: str):
    return click.option(
        "--wandb",
        "wandb_mode",
        type=click.Choice(["offline", "online", "off"]),
        default="offline",
        show_default=True,
        help=help_text,
    )


def _errors(fn):
    """Turn the library's named errors into one-line 'Error: ...' messages and their exit status."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from sorter.errors import PhotosortError

        try:
            return fn(*args, **kwargs)
        except PhotosortError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted; run the same command again to resume.", err=True)
            sys.exit(130)

    return wrapper
