#!/usr/bin/env python3
"""Grad-CAM++ and HiResCAM reference maps for vit-cam-tiny from pytorch-grad-cam (run with the
reference venv: `make bench-reference` creates it). Writes gradcampp.json: both methods for the top
class, and Finer-CAM with each as its base (α = 1, comparison ranks 1–3), at input size."""
import json
import numpy as np
import timm, torch
from PIL import Image
from pytorch_grad_cam import GradCAMPlusPlus, HiResCAM, FinerCAM
from safetensors.torch import load_file

cfg = json.load(open("config.json"))
model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **{k: v for k, v in cfg["model_args"].items()}).eval()
model.load_state_dict(load_file("model.safetensors"))
pre = cfg["pretrained_cfg"]
x = np.asarray(Image.open("image.png").convert("RGB"), dtype=np.float32) / 255
x = (x - np.array(pre["mean"], dtype=np.float32)) / np.array(pre["std"], dtype=np.float32)
x = torch.from_numpy(x.transpose(2, 0, 1)[None].copy())
g = cfg["model_args"]["img_size"] // cfg["model_args"]["patch_size"]

def reshape(t):
    return t[:, 1:, :].reshape(t.size(0), g, g, t.size(2)).permute(0, 3, 1, 2)

layer = [model.blocks[-1].norm1]
out = {"note": "pytorch-grad-cam 1.5.7 GradCAMPlusPlus, HiResCAM and FinerCAM(base_method=...), target layer blocks[-1].norm1"}
for name, cls in [("gradcampp", GradCAMPlusPlus), ("hirescam", HiResCAM)]:
    out[name + "_top1"] = cls(model=model, target_layers=layer, reshape_transform=reshape)(input_tensor=x, targets=None)[0].tolist()
    out["finercam_" + name + "_alpha1_ranks123"] = FinerCAM(model=model, target_layers=layer, reshape_transform=reshape,
                                                            base_method=cls)(input_tensor=x, targets=None)[0].tolist()
json.dump(out, open("gradcampp.json", "w"))
