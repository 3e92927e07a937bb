"""The whole video predictor on this fixture as plain .npy files, for the tracker's parity test (sam2
1.1.0, PyPI, CPU). Usage (from this folder): python make_tracker_fixture.py
Writes tracker/: frames.npy (every frame as load_video_frames prepares it [F, 3, S, S]), mask.npy (the
frame-0 mask, float32 [H, W]), mask_logits.npy ([F, H, W] at video resolution, as propagate_in_video
yields them) and object_scores.npy ([F], NaN for the conditioning frame 0) — the same numbers as
expected.npz (checked here)."""
import os
import numpy as np, torch
from PIL import Image
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sam2.utils.misc import load_video_frames

here = os.path.dirname(os.path.abspath(__file__))
cfg = OmegaConf.load(os.path.join(here, "config.yaml"))
model = instantiate(cfg.model, _recursive_=True).eval()
model.load_state_dict(torch.load(os.path.join(here, "..", "..", "..", "Plugins", "SAM2", "Resources", "sam2-tiny", "model.pt"), map_location="cpu")["model"])
out = os.path.join(here, "tracker")
os.makedirs(out, exist_ok=True)
frames, _, _ = load_video_frames(os.path.join(here, "frames"), model.image_size, offload_video_to_cpu=True)
mask = np.array(Image.open(os.path.join(here, "mask.png"))) > 0
with torch.inference_mode():
    state = model.init_state(video_path=os.path.join(here, "frames"))
    model.add_new_mask(state, frame_idx=0, obj_id=1, mask=torch.from_numpy(mask))
    logits, scores = {}, {}
    for fi, ids, masks in model.propagate_in_video(state):
        logits[fi] = masks[0, 0].float().numpy()
    for fi, o in state["output_dict_per_obj"][0]["non_cond_frame_outputs"].items():
        scores[fi] = float(o["object_score_logits"].reshape(-1)[0])
L = np.stack([logits[i] for i in sorted(logits)]).astype(np.float32)
S = np.array([scores.get(i, np.nan) for i in sorted(logits)], np.float32)
ref = np.load(os.path.join(here, "expected.npz"))
assert np.abs(L - ref["mask_logits"]).max() < 1e-4, np.abs(L - ref["mask_logits"]).max()
np.save(os.path.join(out, "frames.npy"), frames.float().numpy())
np.save(os.path.join(out, "mask.npy"), mask.astype(np.float32))
np.save(os.path.join(out, "mask_logits.npy"), L)
np.save(os.path.join(out, "object_scores.npy"), S)
print("frames", tuple(frames.shape), "logits", L.shape, "scores", S)
