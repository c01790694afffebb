"""MTCNN's last stage, ONet (weights inside facenet-pytorch): as OpenVINO IR at classify time."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np


def load_onet(ir: Path | None, threads: int | None) -> Callable[[np.ndarray], tuple[np.ndarray, ...]]:
    """ONet as a function: ``[n, 3, 48, 48]`` float32 -> (box refinements, landmarks, probabilities)."""
    if ir is not None:
        # fp32 even on a CPU with bf16: ONet costs ~1 ms a photo either way, and in bf16 its face
        # probabilities and landmarks move enough (~1e-2) to flip borderline faces against torch's ONet.
        from sorter.models.runtime import all_outputs, compile_cpu

        run_ov = all_outputs(compile_cpu(ir, threads, precision="f32"))
        return lambda x: tuple(run_ov(x))
    import torch
    from facenet_pytorch.models.mtcnn import ONet  # weights inside the wheel

    if threads:
        torch.set_num_threads(threads)
    net = ONet().eval()

    def run(x: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.inference_mode():
            return tuple(t.numpy() for t in net(torch.from_numpy(x)))

    return run


ONET_IR = "onet.xml"


def export_onet(folder: Path) -> Path:
    """Write ONet (facenet-pytorch's weights) as OpenVINO IR into ``folder``; returns the .xml path.

    Needs torch and openvino; done at training time, so classify's workers need neither torch nor
    facenet-pytorch. The outputs match torch's to ~1e-7.
    """
    import torch
    from facenet_pytorch.models.mtcnn import ONet

    from sorter import offline

    offline.prepare()
    import openvino as ov

    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # OpenVINO's converter traces with torch.jit.trace, which torch 2.14 calls deprecated: a warning
        # about OpenVINO's internals that a user of `train` can do nothing about
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        model = ov.convert_model(
            ONet().eval(), example_input=torch.zeros(1, 3, 48, 48), input=[ov.PartialShape([-1, 3, 48, 48])]
        )
    ov.save_model(model, str(folder / ONET_IR), compress_to_fp16=False)
    return folder / ONET_IR


def cached_onet() -> Path:
    """ONet as OpenVINO IR in photosort's cache folder, exported on first use (needs torch once, in
    this process), so worker processes of a run without a model folder run it without torch."""
    import shutil
    import tempfile

    from sorter import offline

    folder = offline.home() / "onet-ir"
    ir = folder / ONET_IR
    if ir.is_file() and ir.with_suffix(".bin").is_file():
        return ir
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".onet-", dir=folder.parent))
    try:
        export_onet(tmp)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)  # whole or not at all: a run killed while exporting leaves no half model
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ir
