#!/usr/bin/env python3
"""The last lines of ``make demo``: the evaluation, and the system's mAP50 beside the seed project's.

.venv/bin/python bench/demo_summary.py runs/demo-evaluate.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SEED_MAP50 = 0.757  # seed project 004: YOLOv3 + focal loss on the face-mask set, its own 752/100 split


def main() -> None:
    from sorter.training.evaluate import format_metrics

    m = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    print(format_metrics(m))
    s = m.get("system")
    if s:
        print(
            f"\nmask state as a detector on the {m['val_photos']} held-out photos: "
            f"system mAP50 {s['mAP50']:.3f} "
            f"(mAP50-95 {s['mAP50-95']:.3f}); the seed project (YOLOv3 + focal loss, its own split of the "
            f"full set): {SEED_MAP50}. Not the same photos: bench/mask_state.py measures the full "
            "107-photo test side."
        )


if __name__ == "__main__":
    main()
