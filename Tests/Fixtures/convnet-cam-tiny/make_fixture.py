#!/usr/bin/env python3
"""A random ConvNet-3 (width 16, 3 blocks, 10 classes, 32×32 RGB) with pytorch-grad-cam 1.5.7 maps,
for the explainers' CNN path. Run in the `make bench-reference` venv. Target layer: the last block's
ReLU (features[10])."""
import json
import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from pytorch_grad_cam import GradCAM, FinerCAM
from safetensors.torch import save_file

torch.manual_seed(0)
width, classes = 16, 10
layers = []
for d in range(3):
    layers += [nn.Conv2d(3 if d == 0 else width, width, 3, padding=1), nn.GroupNorm(width, width, affine=True),
               nn.ReLU(inplace=False), nn.AvgPool2d(2, 2)]
features = nn.Sequential(*layers)
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = features
        self.classifier = nn.Linear(width * 4 * 4, classes)
    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))
net = Net().eval()
with torch.no_grad():
    for m in net.modules():
        if isinstance(m, nn.GroupNorm):
            m.weight.uniform_(0.5, 1.5); m.bias.uniform_(-0.2, 0.2)
save_file({k: v.contiguous() for k, v in net.state_dict().items()}, "model.safetensors")
mean, std = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]
json.dump({"architecture": "convnet", "in_channels": 3, "num_classes": classes, "net_width": width, "net_depth": 3,
           "image_size": 32, "mean": mean, "std": std}, open("config.json", "w"), indent=1)
rng = np.random.default_rng(0)
img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
img[8:20, 10:24] = [200, 60, 40]
Image.fromarray(img).save("image.png")
x = (img.astype(np.float32) / 255 - np.array(mean, np.float32)) / np.array(std, np.float32)
x = torch.from_numpy(x.transpose(2, 0, 1)[None].copy())
layer = [net.features[10]]
grad = GradCAM(model=net, target_layers=layer)(input_tensor=x, targets=None)[0]
finer = FinerCAM(model=net, target_layers=layer)(input_tensor=x, targets=None)[0]
json.dump({"logits": net(x)[0].tolist(), "gradcam_top1": grad.tolist(), "finercam_alpha1_ranks123": finer.tolist(),
           "note": "pytorch-grad-cam 1.5.7, target layer features[10] (last ReLU)"}, open("expected.json", "w"))
