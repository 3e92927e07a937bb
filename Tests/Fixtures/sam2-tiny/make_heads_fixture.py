"""SAM 2's prompt encoder and mask decoder on frame 0's features, for the heads' parity test (sam2 1.1.0,
PyPI, CPU). Usage (from this folder, after make_encoder_fixture.py): python make_heads_fixture.py
Writes heads/<case>_{masks,ious,tokens,object_score}.npy for three prompts, as SAM2Base._forward_sam_heads
calls the decoder (repeat_image False, the two high-resolution levels, the dense PE of the prompt encoder):
point (one positive point at (100, 60) in image_size pixels, multimask), empty (no prompt: a padding point,
single mask → dynamic multimask via stability), mask (a mask logit map at the prompt encoder's mask size)."""
import os
import numpy as np, torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

here = os.path.dirname(os.path.abspath(__file__))
cfg = OmegaConf.load(os.path.join(here, "config.yaml"))
model = instantiate(cfg.model, _recursive_=True).eval()
model.load_state_dict(torch.load(os.path.join(here, "..", "..", "..", "Plugins", "SAM2", "Resources", "sam2-tiny", "model.pt"), map_location="cpu")["model"])
x = torch.from_numpy(np.load(os.path.join(here, "encoder", "input.npy")))
out = os.path.join(here, "heads")
os.makedirs(out, exist_ok=True)
g = torch.Generator().manual_seed(7)
ms = model.sam_prompt_encoder.mask_input_size
mask = (torch.rand((1, 1) + tuple(ms), generator=g) * 20 - 10)
np.save(os.path.join(out, "mask_input.npy"), mask.numpy())
cases = {
    "point": (torch.tensor([[[100.0, 60.0]]]), torch.tensor([[1]], dtype=torch.int32), None, True),
    "empty": (torch.zeros(1, 1, 2), -torch.ones(1, 1, dtype=torch.int32), None, False),
    "mask": (torch.zeros(1, 1, 2), -torch.ones(1, 1, dtype=torch.int32), mask, False),
}
with torch.inference_mode():
    b = model.forward_image(x)
    _, feats, pos, sizes = model._prepare_backbone_features(b)
    # As SAM2Base does for a single frame without memory: the lowest-resolution level + no_mem_embed.
    top = feats[-1] + model.no_mem_embed
    image = top.permute(1, 2, 0).view(1, -1, *sizes[-1])
    high = [f.permute(1, 2, 0).view(1, -1, *s) for f, s in zip(feats[:-1], sizes[:-1])]
    np.save(os.path.join(out, "image_embedding.npy"), image.numpy())
    for name, (coords, labels, m, multi) in cases.items():
        sparse, dense = model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=m)
        masks, ious, tokens, score = model.sam_mask_decoder(
            image_embeddings=image, image_pe=model.sam_prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, multimask_output=multi, repeat_image=False, high_res_features=high)
        for k, v in [("masks", masks), ("ious", ious), ("tokens", tokens), ("object_score", score)]:
            np.save(os.path.join(out, f"{name}_{k}.npy"), v.float().numpy())
        print(name, tuple(masks.shape), ious.numpy().round(3), float(score))
