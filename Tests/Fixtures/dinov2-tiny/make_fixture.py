"""Regenerates the dinov2-tiny fixture with timm (random weights, a DINOv2-shaped ViT with 4
register tokens, layer scale and no_embed_class): config.json written the way timm publishes its
pretrained configs (no model_args: every size must be read from the tensors), model.safetensors,
input.npy (one normalised image) and tokens.npy / cls.npy (forward_features after the final norm).

    .venv-reference/bin/python Tests/Fixtures/dinov2-tiny/make_fixture.py Tests/Fixtures/dinov2-tiny
"""
import json
import sys

import numpy as np
import timm
import torch
from safetensors.torch import save_file

out = sys.argv[1]
torch.manual_seed(0)
model = timm.models.vision_transformer.VisionTransformer(
    img_size=56, patch_size=14, embed_dim=192, depth=2, num_heads=3, mlp_ratio=1.0, num_classes=0,
    init_values=1.0, reg_tokens=4, no_embed_class=True)
with torch.no_grad():
    for name, p in model.named_parameters():
        if name.endswith("gamma"):
            p.uniform_(0.5, 1.5)  # layer scale that matters
        elif name in ("cls_token", "reg_token", "pos_embed"):
            p.normal_(0, 0.5)
model.eval()
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/model.safetensors")
config = {
    "architecture": "vit_tiny_patch14_reg4_dinov2",
    "num_classes": 0,
    "num_features": 192,
    "global_pool": "token",
    "pretrained_cfg": {"input_size": [3, 56, 56], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                       "interpolation": "bicubic", "crop_pct": 1.0},
}
with open(f"{out}/config.json", "w") as f:
    json.dump(config, f, indent=2)
x = torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    feats = model.forward_features(x)  # [1, 5 + 16, 192] after the final norm
np.save(f"{out}/input.npy", x.numpy().astype(np.float32))
np.save(f"{out}/tokens.npy", feats[:, model.num_prefix_tokens:].numpy().astype(np.float32))
np.save(f"{out}/cls.npy", feats[:, 0].numpy().astype(np.float32))
print("prefix tokens", model.num_prefix_tokens, "pos_embed", tuple(model.pos_embed.shape))
