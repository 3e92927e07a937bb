"""The cycle-consistent fine-tuning loss (SST's OC-CCL) on this fixture with sam2 1.1.0 (PyPI, CPU), for
the parity test of NN/SAM2/CycleTuning.swift. Usage (from this folder): python make_cycle_fixture.py

Both halves of the palindrome go through `SAM2Base.track_step` with the tape on (as SST's
src/sst/oc_ccl.py drives it), the model in eval mode (no dropout): x0 = frame 0 conditioned on its mask
(resized to image_size as add_new_mask does: antialiased bilinear, >= 0.5), x1 = frame 1 tracked from
that memory; a fresh memory; x1 conditioned on its predicted high-resolution mask (soft: sigmoid of the
logits; hard: logits > 0, as oc_ccl.py), x0 tracked. Loss = BCE-with-logits + Dice (smoothing 1) of
x0's high-resolution logits against the x0 mask.
Writes cycle/: loss.npy [2] (soft, hard), back_logits_soft.npy [S, S], and the soft loss's gradient
for three tensors (grad_<name>.npy)."""
import os
import numpy as np, torch, torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

here = os.path.dirname(os.path.abspath(__file__))
cfg = OmegaConf.load(os.path.join(here, "config.yaml"))
model = instantiate(cfg.model, _recursive_=True).eval()
model.load_state_dict(torch.load(os.path.join(here, "..", "..", "..", "Plugins", "SAM2", "Resources", "sam2-tiny", "model.pt"), map_location="cpu")["model"])
for p in model.image_encoder.parameters():
    p.requires_grad_(False)
S = model.image_size
frames = torch.from_numpy(np.load(os.path.join(here, "tracker", "frames.npy")))
mask = torch.from_numpy(np.load(os.path.join(here, "tracker", "mask.npy")))
prompt = (F.interpolate(mask[None, None], size=(S, S), mode="bilinear", align_corners=False, antialias=True) >= 0.5).float()

def features(i):
    with torch.no_grad():
        out = model.forward_image(frames[i : i + 1])
    _, feats, pos, sizes = model._prepare_backbone_features(out)
    return feats, pos, sizes

def step(f, idx, mask_inputs, memory):
    feats, pos, sizes = f
    out = model.track_step(
        frame_idx=idx, is_init_cond_frame=mask_inputs is not None, current_vision_feats=feats, current_vision_pos_embeds=pos,
        feat_sizes=sizes, point_inputs=None, mask_inputs=mask_inputs, output_dict=memory, num_frames=2, run_mem_encoder=True)
    if mask_inputs is not None:
        memory["cond_frame_outputs"][idx] = out
    return out

def cycle(soft):
    f0, f1 = features(0), features(1)
    memory = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    step(f0, 0, prompt, memory)
    x1 = step(f1, 1, None, memory)["pred_masks_high_res"]
    middle = torch.sigmoid(x1) if soft else (x1 > 0).float()
    memory = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    step(f1, 0, middle, memory)
    x0 = step(f0, 1, None, memory)["pred_masks_high_res"]
    bce = F.binary_cross_entropy_with_logits(x0, prompt)
    p = torch.sigmoid(x0)
    dice = 1 - (2 * (p * prompt).sum() + 1) / (p.sum() + prompt.sum() + 1)
    return bce + dice, x0

names = ["sam_mask_decoder.output_upscaling.0.weight", "memory_attention.layers.0.cross_attn_image.v_proj.weight", "memory_encoder.pix_feat_proj.weight"]
params = dict(model.named_parameters())
out = os.path.join(here, "cycle")
os.makedirs(out, exist_ok=True)
soft, back = cycle(True)
grads = torch.autograd.grad(soft, [params[n] for n in names])
hard, _ = cycle(False)
np.save(os.path.join(out, "loss.npy"), np.array([soft.item(), hard.item()], np.float32))
np.save(os.path.join(out, "back_logits_soft.npy"), back[0, 0].detach().numpy().astype(np.float32))
for n, g in zip(names, grads):
    np.save(os.path.join(out, "grad_" + n + ".npy"), g.numpy().astype(np.float32))
print("loss soft", soft.item(), "hard", hard.item(), "grad norms", [float(g.norm()) for g in grads])
