"""Experiment tracking with wandb, offline by default.

Photos of children: nothing is uploaded unless the user passes ``--wandb online``, and no image is
ever logged unless they pass ``--wandb-images``. Offline runs land in the run folder and can be
uploaded later with the ``wandb sync`` command we print.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MODES = ("offline", "online", "off")


class Tracker:
    def __init__(
        self, mode: str, run_dir: Path, name: str, config: dict[str, Any], job_type: str, images: bool = False
    ):
        if mode not in MODES:
            raise ValueError(f"wandb mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode, self.log_images, self.run = mode, images, None
        self.dir: Path | None = None
        if mode == "off":
            return
        from sorter import offline

        offline.prepare()
        os.environ["WANDB_MODE"] = mode  # the user's explicit choice for this run wins over our default
        import wandb

        run_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "photosort"),
            name=name,
            dir=str(run_dir),
            mode=mode,
            config=config,
            job_type=job_type,
            reinit="finish_previous",
            settings=wandb.Settings(
                save_code=False, disable_git=True, console="off", x_disable_stats=True, silent=True
            ),
        )
        self.dir = Path(self.run.dir).parent

    def log(self, data: dict[str, Any], step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(data, step=step)

    def images(self, key: str, images: list[tuple[Path, list[dict[str, Any]]]]) -> int:
        """Log photos with their labelled boxes, only when the user asked (--wandb-images).

        Returns how many were logged (0 unless asked): children's faces never leave by default.
        """
        if self.run is None or not self.log_images:
            return 0
        import wandb

        logged = []
        for path, boxes in images:
            box_data = [
                {
                    "position": {
                        "minX": b["xyxy"][0],
                        "minY": b["xyxy"][1],
                        "maxX": b["xyxy"][2],
                        "maxY": b["xyxy"][3],
                    },
                    "domain": "pixel",
                    "class_id": b["class_id"],
                    "box_caption": b["name"],
                }
                for b in boxes
            ]
            logged.append(
                wandb.Image(str(path), boxes={"labels": {"box_data": box_data}} if box_data else None)
            )
        self.run.log({key: logged})
        return len(logged)

    def table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Table(columns=columns, data=rows)})

    def summary(self, data: dict[str, Any]) -> None:
        if self.run is not None:
            for k, v in data.items():
                self.run.summary[k] = v

    def finish(self) -> str | None:
        """Close the run; return a line telling the user where it is (and how to upload it)."""
        if self.run is None:
            return None
        self.run.finish()
        if self.mode == "offline":
            return f"wandb run saved offline in {self.dir}; to upload it: wandb sync {self.dir}"
        return f"wandb run: {self.run.url}"
