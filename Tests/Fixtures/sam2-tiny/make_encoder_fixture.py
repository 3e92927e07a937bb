"""SAM 2's image encoder on frame 0 of this fixture, for the encoder's parity test (sam2 1.1.0 from PyPI, CPU).
Usage (from this folder): python make_encoder_fixture.py  (needs torch, sam2, hydra-core, omegaconf)
Writes encoder/: input.npy (frame 0 as the video predictor prepares it: PIL resize to image_size², /255,
ImageNet mean/std), trunk_{0..3}.npy (Hiera's stage outputs, N×C×H×W), fpn_{0..2}.npy (backbone_fpn after
scalp and the mask decoder's conv_s0/conv_s1, as SAM2Base.forward_image returns them), pos_{0..2}.npy
(vision_pos_enc)."""
import os
import numpy as np, torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sam2.utils.misc import load_video_frames

here = os.path.dirname(os.path.abspath(__file__))
cfg = OmegaConf.load(os.path.join(here, "config.yaml"))
model = instantiate(cfg.model, _recursive_=True).eval()
model.load_state_dict(torch.load(os.path.join(here, "..", "..", "..", "Plugins", "SAM2", "Resources", "sam2-tiny", "model.pt"), map_location="cpu")["model"])
images, _, _ = load_video_frames(os.path.join(here, "frames"), model.image_size, offload_video_to_cpu=True)
x = images[0:1].float()
out = os.path.join(here, "encoder")
os.makedirs(out, exist_ok=True)
np.save(os.path.join(out, "input.npy"), x.numpy())
with torch.inference_mode():
    for i, t in enumerate(model.image_encoder.trunk(x)):
        np.save(os.path.join(out, f"trunk_{i}.npy"), t.numpy())
    b = model.forward_image(x)
    for i, t in enumerate(b["backbone_fpn"]):
        np.save(os.path.join(out, f"fpn_{i}.npy"), t.numpy())
    for i, t in enumerate(b["vision_pos_enc"]):
        np.save(os.path.join(out, f"pos_{i}.npy"), t.numpy())
print("input", tuple(x.shape), "fpn", [tuple(t.shape) for t in b["backbone_fpn"]])
