"""The mask head's network and the JSON that describes it: one definition for training
(:mod:`sorter.training.mask_head`), fine-tuning (:mod:`sorter.training.mask_fit`) and the benchmarks.

The small CNN trained from scratch, or torchvision's MobileNetV2 fine-tuned from ImageNet weights; one
network or several soft-voted, each optionally on the crop and its mirror image; optionally with a
box output (the labelled box in units of the crop). Torch loads inside functions.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sorter.heads.mask import DEFAULT_MEAN, DEFAULT_STD, HEAD_CLASSES, MASK_CLASSES, NO_FACE

OPSET = 17  # the ONNX opset the head is exported at

BOX_OUTPUTS = 4  # a head with a box: the labelled box (x0, y0, x1, y1) in crop units after the logits
BOX_WEIGHT = 1.0  # the L1 box loss's weight beside the class loss (bench/mask_box.py measured it)
# how the JSON beside such a head describes its box output (sorter.heads.mask.MaskHead reads "outputs")
BOX_META = {
    "outputs": BOX_OUTPUTS,
    "after": "the class logits, in the same output",
    "meaning": "the face's box as the labeller draws it, (x0, y0, x1, y1) minus the crop's centre, over "
    "the crop's side",
    "function": "sorter.heads.mask.box_from_crop",
}

ARCHS = ("small", "mobilenet_v2")  # the head's network: our small CNN, or torchvision's MobileNetV2


def make_model(
    width: tuple[int, ...] = (16, 32, 64, 96),
    n_classes: int = len(HEAD_CLASSES),
    members: int = 1,
    flip: bool = False,
    arch: str = "small",
    pretrained: Path | None = None,
    n_box: int = 0,
):
    """4 conv blocks (BN+ReLU, max-pool), global average pool, dropout, ``n_classes`` logits (4: the three
    mask states and no_face; 3 for heads from before no_face).

    ``members`` > 1 or ``flip``: that many such networks soft-voted (:func:`voted`), each on the crop and,
    with ``flip``, on its mirror image too; one file, one call, the same input and output as one network.

    ``arch="mobilenet_v2"``: torchvision's MobileNetV2 (width 1.0) with a new ``n_classes`` classifier;
    ``pretrained``: a state_dict of it (ImageNet weights, e.g. torchvision's ``mobilenet_v2-b0353104.pth``)
    loaded into its features before the classifier is replaced. Why: a few thousand labelled faces, 123
    of them worn incorrectly, are too few to learn features from scratch; ImageNet features fine-tuned on
    them are measured against the small CNN by bench/mask_backbone.py.

    ``n_box`` (0 or :data:`BOX_OUTPUTS`): the network also gives the face's labelled box in crop units
    (``sorter.heads.mask.box_in_crop``) after its ``n_classes`` logits.
    """
    import torch.nn as nn

    if arch not in ARCHS:
        raise ValueError(f"unknown mask head network {arch!r}; one of {', '.join(ARCHS)}")
    if arch == "mobilenet_v2":
        nets = [_mobilenet_v2(n_classes + n_box, pretrained) for _ in range(max(members, 1))]
        return nets[0] if members <= 1 and not flip else voted(nets, flip, n_box)

    def cbr(cin: int, cout: int) -> list:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    def one():
        layers: list = []
        cin = 3
        for i, c in enumerate(width):
            layers += cbr(cin, c) + (cbr(c, c) if i > 0 else []) + [nn.MaxPool2d(2)]
            cin = c
        return nn.Sequential(
            *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(cin, n_classes + n_box)
        )

    if members <= 1 and not flip:
        return one()
    return voted([one() for _ in range(members)], flip, n_box)


def _mobilenet_v2(n_classes: int, pretrained: Path | None):
    import torch
    import torch.nn as nn
    from torchvision.models import mobilenet_v2

    net = mobilenet_v2()  # torchvision's definition; no weights are fetched (weights=None)
    if pretrained is not None:
        net.load_state_dict(torch.load(pretrained, map_location="cpu", weights_only=True))
    net.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(net.last_channel, n_classes))
    return net


def voted(nets: Sequence[Any], flip: bool, n_box: int = 0):
    """Soft voting: the mean of the networks' probabilities (over the crop and, with ``flip``, its
    mirror), returned as log-probabilities, so that softmax gives the mean back and the output reads
    like one network's logits (the runtime and the losses take it unchanged). Why: five networks
    trained from different seeds on a few thousand faces disagree on the rare and small faces; their
    mean is steadier than any one (bench/mask_head.py measures one against the vote on validation).
    With ``n_box``, the box outputs after the logits are averaged too, a mirror view's mirrored back."""
    import torch
    import torch.nn as nn

    class Voted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.members = nn.ModuleList(nets)
            self.flip = flip

        def forward(self, x):
            views = [(x, False), (torch.flip(x, dims=[3]), True)] if self.flip else [(x, False)]
            outs = [(m(v), mirrored) for m in self.members for v, mirrored in views]
            if not n_box:
                p = torch.stack([torch.softmax(o, 1) for o, _ in outs]).mean(0)
                return torch.log(p.clamp_min(1e-12))
            p = torch.stack([torch.softmax(o[:, :-n_box], 1) for o, _ in outs]).mean(0)
            b = torch.stack([_unmirror(o[:, -n_box:]) if mirrored else o[:, -n_box:] for o, mirrored in outs])
            return torch.cat([torch.log(p.clamp_min(1e-12)), b.mean(0)], 1)

    return Voted()


def _unmirror(b):
    """Boxes in crop units (x0, y0, x1, y1) read from a mirrored crop, in the crop's own frame."""
    import torch

    return torch.stack([-b[:, 2], b[:, 1], -b[:, 0], b[:, 3]], 1)


NETWORKS = {
    "small": "a small CNN (4 conv blocks, BN+ReLU, global average pool",
    "mobilenet_v2": "MobileNetV2 (torchvision's, fine-tuned from ImageNet weights; a new classifier",
}


def describe(
    size: int,
    margin: float,
    files: dict,
    provenance: dict,
    command: str,
    classes=MASK_CLASSES,
    arch: str = "small",
) -> dict:
    """The JSON beside the ONNX file (``figures`` added by the caller), read by ``MaskHead``."""
    extra = " (no_face: the box is not a face)" if NO_FACE in classes else ""
    return {
        "name": "mask_head",
        "description": f"Mask state of one face: {NETWORKS[arch]}, {len(classes)} logits){extra}",
        "arch": arch,
        "classes": list(classes),
        "input": {
            "name": "input",
            "size": size,
            "layout": "NCHW",
            "channels": "RGB",
            "dtype": "float32",
            "output": "logits (softmax -> probabilities in classes order)",
        },
        "crop": {
            "margin": margin,
            "shape": "square centred on the box centre, side = margin x max(w, h)",
            "padding": "black outside the image",
            "box": "xyxy pixels, labeller style (labelImg: forehead to chin)",
            "function": "sorter.heads.mask.crop",
        },
        "normalisation": {
            "mean": list(DEFAULT_MEAN),
            "std": list(DEFAULT_STD),
            "formula": "(rgb_uint8 - mean) / std, per channel",
        },
        **files,
        "provenance": provenance,
        "training_command": command,
    }


def export(model, out_dir: Path, size: int, half: bool = False) -> dict[str, Any]:
    """Write ``mask_head.onnx`` (opset 17, dynamic batch) and ``mask_head.pt`` (state_dict) to ``out_dir``;
    their sha256 and sizes, as the JSON records them.

    ``half``: both files keep the weights at half precision, half the bytes (the shipped MobileNetV2 head
    is 2.2 M weights: 4.5 MB instead of 9): the model's own weights are rounded to fp16 first, the ONNX
    file stores each large weight as fp16 with a Cast back to fp32 before use (inference stays fp32),
    and the state_dict stores fp16 tensors (:func:`sorter.training.mask_head.load_torch` loads them
    into the fp32 network)."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path, pt_path = out_dir / "mask_head.onnx", out_dir / "mask_head.pt"
    tmp = onnx_path.with_suffix(".onnx.tmp")
    model.eval()
    if half:
        with torch.no_grad():
            for t in [*model.parameters(), *model.buffers()]:
                if t.is_floating_point():
                    t.copy_(t.half().float())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, size, size),),
            str(tmp),
            opset_version=OPSET,
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            # half: batch norm kept as its own op (PRESERVE skips the eval-mode fusion into the conv),
            # so every stored weight is the fp16 value the state_dict holds, not a product rounded again
            **({"training": torch.onnx.TrainingMode.PRESERVE} if half else {}),
        )
    if half:
        _store_half(tmp)
    os.replace(tmp, onnx_path)
    buf = io.BytesIO()
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save({k: v.half() if half and v.is_floating_point() else v for k, v in state.items()}, buf)
    pt_path.with_suffix(".pt.tmp").write_bytes(buf.getvalue())
    os.replace(pt_path.with_suffix(".pt.tmp"), pt_path)
    data = onnx_path.read_bytes()
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "opset": OPSET,
        "torch_sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
        "weights_stored_as": "float16 (computed in float32)" if half else "float32",
    }


def _store_half(path: Path, min_size: int = 16) -> None:
    """Rewrite an ONNX file's float32 weights of ``min_size`` values or more as float16, each read
    through a Cast to float32 (OpenVINO and OpenCV both take it; OpenVINO reads the pattern as
    compressed weights)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    casts = []
    for init in list(graph.initializer):
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32 and a.size >= min_size:
            stored = numpy_helper.from_array(a.astype(np.float16), f"{init.name}_fp16")
            graph.initializer.remove(init)
            graph.initializer.append(stored)
            casts.append(helper.make_node("Cast", [stored.name], [init.name], to=TensorProto.FLOAT))
    for node in reversed(casts):
        graph.node.insert(0, node)
    onnx.save(model, str(path))
