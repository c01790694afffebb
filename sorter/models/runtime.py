"""OpenVINO on the CPU, set up one way for every model classify runs (YOLO's export, YuNet, ONet, SFace).

Unpinned: OpenVINO pins a one-thread model to the first core, so the models of two worker processes
queued on one core (YOLO 182 ms a photo in each, measured, against 82 ms unpinned). One thread per
worker process when ``threads`` is given. Precision: OpenVINO's default for the CPU (bf16 where it has
AVX-512 BF16 or AMX, else fp32) unless a model asks for "f32".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sorter import offline


def compile_cpu(
    path: Path, threads: int | None = None, shape: list[int] | None = None, precision: str | None = None
) -> Any:
    """The ONNX/IR model at ``path`` compiled for the CPU (``shape``: its input reshaped first)."""
    offline.prepare(ultralytics=False)  # OpenVINO's telemetry made unimportable before it loads
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    if shape is not None:
        model.reshape({model.inputs[0]: ov.PartialShape(shape)})
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    return core.compile_model(model, "CPU", config)


def all_outputs(compiled: Any) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A function running one inference and returning every output of it, in the model's order.

    (Indexing ``compiled(x)[o]`` for each output instead runs one inference per output: ONet, with
    three outputs, ran three times a call that way.)
    """
    outputs = compiled.outputs

    def run(x: np.ndarray) -> list[np.ndarray]:
        result = compiled(x)
        return [result[o] for o in outputs]

    return run
