"""The ``photosort`` command: a thin click layer over :mod:`sorter.api`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from sorter import __version__
from sorter.cli_common import EXIT_HELP, _errors, device_option, model_option, wandb_option
from sorter.cli_loop import COMMANDS
from sorter.settings import BACKENDS, BY, FACE_BY


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="photosort")
def cli() -> None:
    """Sort a photo library into one folder per person, privately, on this computer.

    \b
    1. Label a few hundred photos with labelImg: a box on each face, the person's name as the class.
    2. photosort train LABELLED --name daycare
    3. photosort classify PHOTOS --out sorted/ --model runs/daycare
    4. Look through sorted/uncertain/ by hand.

    Nothing is uploaded: training logs go to wandb in offline mode unless you pass --wandb online.
    """


@cli.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--name", default="photosort", show_default=True, help="Run name: the model is saved in RUNS/NAME."
)
@click.option(
    "--runs",
    "runs_dir",
    default="runs",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder that holds trained models.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Training epochs of the detector. [default: as many as fit in --detector-minutes on a CPU; "
    "50 on a GPU]",
)
@click.option(
    "--detector-minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Time budget for training the detector on a CPU (when --epochs is not given).",
)
@click.option(
    "--mask-head-minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=3.0,
    show_default=True,
    help="When the classes are mask states: time budget for fine-tuning the mask head on the labels.",
)
@click.option("--imgsz", default=640, show_default=True, help="Detector input size in pixels.")
@click.option(
    "--model",
    "base",
    default="yolo11n.yaml",
    show_default=True,
    help="Detector to start from: a YAML builds a fresh one (works offline); a .pt file (e.g. "
    "pretrained COCO weights you downloaded) fine-tunes it and learns much faster.",
)
@device_option
@click.option("--seed", default=0, show_default=True, help="Random seed (split, training).")
@click.option(
    "--batch", type=int, default=None, help="Images per training batch. [default: 4 on a CPU, 8 on a GPU]"
)
@click.option(
    "--val-fraction",
    default=0.2,
    show_default=True,
    help="Share of photos held out to measure the model (grouped so copies stay together).",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="Default score at which a person is accepted in a photo (stored in the model).",
)
@click.option(
    "--band",
    type=click.FloatRange(0.0, 1.0),
    default=0.25,
    show_default=True,
    help="Scores this far below the threshold send the photo to uncertain/ for review.",
)
@wandb_option(
    "Experiment tracking. offline keeps it in the run folder (upload later "
    "with 'wandb sync'); online uploads metrics as it trains."
)
@click.option(
    "--wandb-images",
    is_flag=True,
    help="Also log images to wandb. Off by default: these are children's faces.",
)
@click.option(
    "--recogniser/--no-recogniser",
    default=True,
    show_default=True,
    help="Also fit the face recogniser (pretrained face embeddings + a per-person model, calibrated "
    "by cross-validation). It is what tells masked children apart; the detector alone cannot.",
)
@click.option(
    "--precision",
    type=click.FloatRange(0.5, 1.0),
    default=0.98,
    show_default=True,
    help="Photo-level precision the recogniser's per-person thresholds are calibrated for.",
)
@click.option(
    "--embedder",
    type=click.Choice(["sface", "dlib"]),
    default="sface",
    show_default=True,
    help="Face vectors the recogniser learns from: SFace (better on masked faces, 10x faster) or "
    "dlib's ResNet (the first recogniser's).",
)
@click.option(
    "--export/--no-export",
    default=True,
    show_default=True,
    help="Also export the detector to OpenVINO for faster CPU inference; it is used only if its "
    "validation mAP50-95 is within 0.01 of the PyTorch weights.",
)
@_errors
def train(
    data: Path,
    name: str,
    runs_dir: Path,
    epochs: int | None,
    detector_minutes: float,
    mask_head_minutes: float,
    imgsz: int,
    base: str,
    device: str | None,
    seed: int,
    batch: int | None,
    val_fraction: float,
    threshold: float,
    band: float,
    wandb_mode: str,
    wandb_images: bool,
    recogniser: bool,
    precision: float,
    embedder: str,
    export: bool,
) -> None:
    """Train a model on DATA, a folder labelled with labelImg.

    DATA holds photos with Pascal VOC .xml files (or YOLO .txt files and classes.txt) beside them, one
    box per face, the class being the person's name. Photos without labels are used as negatives.
    Label problems are listed, each naming its file, and those photos are left out.

    Writes RUNS/NAME/: weights, classes, settings, thresholds and metrics.json.
    """
    from sorter.api import train as do_train

    result = do_train(
        data,
        name=name,
        runs_dir=runs_dir,
        epochs=epochs,
        detector_minutes=detector_minutes,
        mask_head_minutes=mask_head_minutes,
        imgsz=imgsz,
        model=base,
        device=device,
        seed=seed,
        batch=batch,
        val_fraction=val_fraction,
        threshold=threshold,
        band=band,
        wandb=wandb_mode,
        wandb_images=wandb_images,
        recogniser=recogniser,
        precision=precision,
        embedder=embedder,
        export=export,
    )
    click.echo(result.summary())


@cli.command(epilog=EXIT_HELP)
@click.argument("library", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder: one sub-folder per person, uncertain/, manifest.csv.",
)
@click.option(
    "--model",
    "model",
    default=None,
    type=click.Path(path_type=Path),
    help="A trained model folder (from photosort train). [default: runs/photosort; none with --by "
    "mask, age-band, gender or mask-gender-age]",
)
@click.option(
    "--by",
    type=click.Choice(list(BY)),
    default=None,
    help="Sort into a folder per person (needs --model), or by what faces show, with no model: mask "
    "state (with_mask/, without_mask/, mask_weared_incorrect/), age-band (0-2/, 3-5/, 6-9/, 10-12/, "
    "13-17/, 18-29/, 30-44/, 45-59/, 60+/), gender (female/, male/) or mask-gender-age (the 18 classes "
    "mask state x gender x 0-29/30-59/60+, e.g. with_mask_female_0-29/). [default: mask for a model "
    "trained on mask-state labels, else person]",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Accept a person at this score or above. [default: the model's calibrated value]",
)
@click.option(
    "--band",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Scores this far below the threshold go to uncertain/. [default: the model's]",
)
@click.option(
    "--precision",
    type=click.FloatRange(0.5, 1.0),
    default=None,
    help="Re-pick per-person thresholds for this photo-level precision from the scores stored at "
    "training time (models with a recogniser). Higher: fewer mistakes, more photos in uncertain/.",
)
@device_option
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=None,
    help="Photos per detector batch [default: 1 on a CPU, where batching is slower; 8 on a GPU].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Processes that decode and run the models [default: one per CPU core, at most 4; 0: none]. "
    "With --backend ray: actors, one core each [default: one per core of the cluster].",
)
@click.option(
    "--detector",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Run the trained YOLO detector beside the recogniser's face detector. auto: as training "
    "decided on the validation photos (it runs only if it made the sorting better there).",
)
@click.option(
    "--backend",
    type=click.Choice(list(BACKENDS)),
    default="local",
    show_default=True,
    help="Where photos are analysed: worker processes here, or actors of a Ray cluster (needs "
    "pip install 'photosort[ray]'; copies, index and manifest are still written here). See docs/ray.md.",
)
@click.option(
    "--ray-address",
    metavar="ADDR",
    default=None,
    help="With --backend ray: the cluster to join (auto, HOST:6379, ray://HOST:10001). "
    "[default: start a Ray of this machine only]",
)
@click.option("--dry-run", is_flag=True, help="Write only manifest.csv; copy nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_errors
def classify(
    library: Path,
    out: Path,
    model: Path | None,
    by: str | None,
    threshold: float | None,
    band: float | None,
    precision: float | None,
    device: str | None,
    batch: int | None,
    workers: int | None,
    detector: str,
    backend: str,
    ray_address: str | None,
    dry_run: bool,
    quiet: bool,
) -> None:
    """Copy each photo of LIBRARY into OUT/<person>/ for every person in it.

    Photos whose best score falls just below the threshold go to OUT/uncertain/ for review; a photo
    may land in several folders. Originals are only read, never changed; copies are byte-identical
    and keep their timestamps. OUT/manifest.csv says, for every photo, who was found with what
    score, where it was copied and why it is uncertain, and each face's box, name, mask state, age
    and gender (faces_detail). Re-running skips finished photos.

    With --by mask, each photo goes into OUT/with_mask/, OUT/without_mask/ and
    OUT/mask_weared_incorrect/ for every state its faces show; no trained model is needed. Likewise
    --by age-band, gender and mask-gender-age.
    """
    from sorter.api import classify as do_classify

    if model is None and by not in FACE_BY:
        model = Path("runs/photosort")
    report = do_classify(
        library,
        out,
        model,
        by=by,
        threshold=threshold,
        band=band,
        precision=precision,
        device=device,
        batch=batch,
        workers=workers,
        use_detector={"auto": None, "on": True, "off": False}[detector],
        backend=backend,
        ray_address=ray_address,
        dry_run=dry_run,
        progress=not quiet,
    )
    click.echo(report.summary())
    sys.exit(report.exit_code)


@cli.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@model_option
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the metrics as JSON to this file.",
)
@wandb_option("Log the evaluation to wandb (offline: into the model folder).")
@_errors
def evaluate(
    data: Path, model: Path, device: str | None, as_json: bool, out: Path | None, wandb_mode: str
) -> None:
    """Measure a model on DATA, a labelled folder it was not trained on.

    Reports the YOLO detector's face-box precision, recall, mAP50 and mAP50-95 per class; the whole
    system's (face detector + heads, as classify runs it) scored the same way; and photo-level
    precision and recall per person (what the sorted folders would look like). --json adds them as
    keys "detector", "system" and "photo".
    """
    from sorter.api import evaluate as do_evaluate
    from sorter.training.evaluate import format_metrics

    metrics = do_evaluate(data, model, device=device, wandb=wandb_mode, out=out)
    click.echo(json.dumps(metrics, indent=1) if as_json else format_metrics(metrics))


for _command in COMMANDS:
    cli.add_command(_command)

if __name__ == "__main__":
    cli()
