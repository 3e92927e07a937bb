"""Parity fixture for Sources/NN/ResNet.swift against torchvision (0.29.2, torch 2.15).

A full ResNet-18 checkpoint is 45 MB, so the weights are not stored: every state-dict tensor is
filled by a formula both sides compute (see `fill`), in torchvision's state-dict order. Stored:
the state dict's names, shapes and dtypes as torchvision produces them, a seeded input and the
eval-mode logits. Two models: torchvision `resnet18(num_classes=10)` at 32x32 and the D3HR/RDED
`resnet18_modified` (conv1 3x3 stride 1 padding 1, maxpool = Identity) at 16x16.

Run: /work/venv-torch/bin/python Tests/Fixtures/resnet18/make_fixture.py
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))


def fill(index, name, shape):
    """value[i] = a + b * sin(0.731 * i + 1.37 * index + 0.5), computed in float64, stored float32."""
    n = int(np.prod(shape)) if len(shape) else 1
    s = np.sin(0.731 * np.arange(n, dtype=np.float64) + 1.37 * index + 0.5)
    leaf = name.split(".")[-1]
    if leaf == "num_batches_tracked":
        return None
    if leaf == "running_var":
        v = 1.0 + 0.5 * s
    elif leaf == "running_mean":
        v = 0.1 * s
    elif leaf == "bias":
        v = 0.1 * s
    elif len(shape) == 1:  # BatchNorm gain
        v = 1.0 + 0.2 * s
    else:
        fan_in = int(np.prod(shape[1:]))
        v = (1.7 / math.sqrt(fan_in)) * s
    return v.astype(np.float32).reshape(shape)


def build(modified):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    if modified:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
        model.maxpool = nn.Identity()
    sd = model.state_dict()
    entries = []
    new = {}
    for index, (name, t) in enumerate(sd.items()):
        entries.append({"name": name, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")})
        v = fill(index, name, list(t.shape))
        new[name] = t.clone() if v is None else torch.from_numpy(v)
    model.load_state_dict(new)
    model.eval()
    return model, entries


def main():
    out = {"torch": torch.__version__, "torchvision": torchvision.__version__, "models": {}}
    for key, modified, size in [("resnet18", False, 32), ("resnet18_modified", True, 16)]:
        model, entries = build(modified)
        g = torch.Generator().manual_seed(7)
        x = torch.randn(2, 3, size, size, generator=g)
        with torch.no_grad():
            logits = model(x)
        out["models"][key] = {
            "size": size,
            "state_dict": entries,
            "input": x.flatten().tolist(),
            "logits": logits.flatten().tolist(),
        }
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
