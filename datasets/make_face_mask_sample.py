"""Rebuild the bundled demo sample from the full CC0 face-mask set (../shared/data/face-mask).

Only needed by maintainers; the sample itself is committed. Train photos come from the set's train
side (N % 8 != 0) and test photos from its test side (N % 8 == 0), so the demo never tests on what it
trained on. Photos are re-saved as JPEG (quality 92) to keep the repository small; the XML files are
rewritten with the new file name and otherwise unchanged.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from statistics import median

import defusedxml.ElementTree as ET
from PIL import Image

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/face-mask")
OUT = Path(__file__).parent / "face-mask-sample"
N_TRAIN, N_TEST = 60, 20


def boxes(xml: Path) -> list[tuple[str, float]]:
    root = ET.parse(xml).getroot()
    out = []
    for o in root.iter("object"):
        b = o.find("bndbox")
        h = float(b.find("ymax").text) - float(b.find("ymin").text)
        out.append((o.find("name").text, h))
    return out


def pick(numbers: list[int], n: int) -> list[int]:
    info = {k: boxes(SRC / "annotations" / f"maksssksksss{k}.xml") for k in numbers}
    # faces big enough to see, few enough per photo to keep training quick
    good = [k for k in numbers if info[k] and median(h for _, h in info[k]) >= 24 and len(info[k]) <= 8]
    rare = [k for k in good if any(c == "mask_weared_incorrect" for c, _ in info[k])][: n // 4]
    plain = [k for k in good if any(c == "without_mask" for c, _ in info[k]) and k not in rare][: n // 3]
    rest = [k for k in good if k not in rare and k not in plain]
    return sorted(rare + plain + rest[: n - len(rare) - len(plain)])


def main() -> None:
    nums = sorted(int(re.findall(r"\d+", p.stem)[0]) for p in (SRC / "images").glob("*.png"))
    sides = {
        "train": pick([k for k in nums if k % 8], N_TRAIN),
        "test": pick([k for k in nums if k % 8 == 0], N_TEST),
    }
    for side, chosen in sides.items():
        folder = OUT / side
        folder.mkdir(parents=True, exist_ok=True)
        for k in chosen:
            stem = f"maksssksksss{k}"
            Image.open(SRC / "images" / f"{stem}.png").convert("RGB").save(folder / f"{stem}.jpg", quality=92)
            xml = (SRC / "annotations" / f"{stem}.xml").read_text()
            (folder / f"{stem}.xml").write_text(xml.replace(f"{stem}.png", f"{stem}.jpg"))
    print({side: len(v) for side, v in sides.items()})


if __name__ == "__main__":
    main()
