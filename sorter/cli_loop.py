"""The teacher's half of the loop (issue 13): ``review``, ``learn`` and ``prelabel``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sorter.cli_common import _errors, model_option

sorted_with_option = click.option(
    "--model",
    type=click.Path(path_type=Path),
    default=None,
    help="The model folder OUT was sorted with. [default: the one classify used]",
)

# --- review -----------------------------------------------------------------------------------------


@click.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@sorted_with_option
@click.option(
    "--port", type=click.IntRange(0, 65535), default=0, help="Port on 127.0.0.1 [default: any free one]"
)
@click.option("--no-browser", is_flag=True, help="Print the page's address; do not open a browser.")
@_errors
def review(out: Path, model: Path | None, port: int, no_browser: bool) -> None:
    """Open a page in the browser to settle OUT's uncertain faces, one face at a time or many at once.

    For each face in doubt: the face, its box on the whole photo, the best two names. Name it, call it
    a stranger or not a face, or skip; browse a child's accepted faces and reject wrong ones; name
    faces that recur in photos of no known person (a new child). Every decision is saved at once.
    Then run 'photosort learn OUT' so the model learns from them.

    The page is served on 127.0.0.1 only, with a secret token in its address: no other computer,
    and no other page in your browser, can reach it. Ctrl-C stops it.
    """
    import webbrowser

    from sorter.review.server import Review, ReviewServer

    server = ReviewServer(Review(out, model), port=port)
    click.echo(f"review page: {server.url}")
    click.echo("(Ctrl-C to stop; decisions are saved as you make them)")
    if not no_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped; every decision is saved. Next: photosort learn " + str(out))
    finally:
        server.stop()


# --- learn ------------------------------------------------------------------------------------------


@click.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@sorted_with_option
@click.option("--undo", is_flag=True, help="Put back the model as it was before the last learn, and re-sort.")
@_errors
def learn(out: Path, model: Path | None, undo: bool) -> None:
    """Learn from every correction since the last learn, then re-sort OUT.

    Corrections are the review page's decisions and what you did in the file manager: a photo moved
    or copied from OUT/uncertain/ into OUT/<name>/ (that person is in it), a copy removed from
    uncertain/ or from a person's folder (that person is not), a new folder OUT/<new name>/ (a new
    person). The recogniser is refitted from stored face vectors (no photo is decoded again) and
    recalibrated; the previous version is kept (--undo puts it back). Your corrections always stand.
    """
    from sorter.review.learn import learn as do_learn

    report = do_learn(out, model, undo=undo)
    click.echo(report.summary())
    sys.exit(report.resort.exit_code if report.resort is not None else 0)


# --- prelabel ---------------------------------------------------------------------------------------


@click.command()
@click.argument("photos", type=click.Path(exists=True, file_okay=False, path_type=Path))
@model_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["voc", "yolo"]),
    default="voc",
    show_default=True,
    help="Label files to write: Pascal VOC .xml, or YOLO .txt with a classes.txt per folder.",
)
@_errors
def prelabel(photos: Path, model: Path, fmt: str) -> None:
    """Write labelImg label files beside the new photos in PHOTOS, with the model's guesses.

    Each photo without a label file gets one, with a box and the predicted name on every face the
    model is sure of, so that in labelImg you correct boxes instead of drawing them. A label file
    that exists is never overwritten (the photo is skipped and counted), and a photo with no face
    above the threshold gets none. Check every photo in labelImg: a face the model missed has no box.
    """
    from sorter.io.bundle import Bundle
    from sorter.training.prelabel import prelabel_folder

    report = prelabel_folder(photos, Bundle.load(model), fmt, log=lambda line: click.echo(line, err=True))
    click.echo(report.summary())
    sys.exit(3 if report.problems else 0)


# --- live -------------------------------------------------------------------------------------------


@click.command()
@click.option(
    "--source",
    required=True,
    help="0 (the first camera; 1 the second ...), a video file, or a stream address (rtsp://...).",
)
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    default=None,
    help="A trained model folder (from photosort train) to name the faces. Not needed with --by mask.",
)
@click.option(
    "--by",
    type=click.Choice(["person", "mask"]),
    default="person",
    show_default=True,
    help="Name faces by person (needs --model), or by mask state (with_mask, without_mask, "
    "mask_weared_incorrect; no model needed).",
)
@click.option("--window/--no-window", default=True, show_default=True, help="Show the annotated video.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the annotated video here (.mp4 or .avi).",
)
@click.option(
    "--timeline",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the appearances here as CSV: person,start_s,end_s,score (seconds from the start).",
)
@click.option(
    "--detect-every",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Look for faces on every n-th frame; 0: as often as keeps up with the source's frame rate.",
)
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after this many frames.")
@_errors
def live(
    source: str,
    model: Path | None,
    by: str,
    window: bool,
    out: Path | None,
    timeline: Path | None,
    detect_every: int,
    max_frames: int | None,
) -> None:
    """Show who is in front of a camera, in a stream or in a video file, as they move.

    Each face gets a box, its name (or stranger), its mask state and score; the frames per second
    are in the corner. Faces are followed from frame to frame, and a face's name is voted over
    several looks at it, so it stays the same while the face moves. q or Esc closes the window;
    Ctrl-C or the end of a file stops, and the outputs are written then (under a temporary name
    until complete).

    \b
    Without a screen: --no-window --out annotated.mp4 --timeline timeline.csv
    A camera or a stream never falls behind: frames that come while the models are busy are
    dropped. A file without a window is processed frame by frame, in file time (the annotated
    copy has every frame); faces are then looked for on fewer frames when that keeps up.
    """
    from sorter.video.live import run_live

    if not window and out is None and timeline is None:
        raise click.UsageError("with --no-window, give --out and/or --timeline")
    report = run_live(
        source,
        model=model,
        by=by,
        window=window,
        out=out,
        timeline=timeline,
        detect_every=detect_every,
        max_frames=max_frames,
    )
    click.echo(report.summary())


COMMANDS: list[click.Command] = [review, learn, prelabel, live]
