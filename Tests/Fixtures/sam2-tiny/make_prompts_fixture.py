"""The video predictor on this fixture with point and box prompts on frame 0, for the tracker's
prompt parity test (sam2 1.1.0, PyPI, CPU). Usage (from this folder):
    /work/venv-torch/bin/python make_prompts_fixture.py
For each case, `add_new_points_or_box` on frame 0 (video pixel coordinates, normalize_coords=True,
clear_old_points=True, one call) then `propagate_in_video`. Writes prompts.npz (np.savez, uncompressed):
  <case>_points [P, 2] f32 (x, y in frame-0 pixels; P may be 0), <case>_labels [P] i32 (1 positive,
  0 negative), <case>_box [4] f32 (x0, y0, x1, y1; NaN when the case has no box),
  <case>_mask_logits [F, H, W] f32 at video resolution as propagate_in_video yields them,
  <case>_object_scores [F] f32 (frame 0's from the conditioning output: a real SAM output here).
Cases: click (one positive click: multimask), clicks (positive + negative), box, box_point (a box and a
negative click inside it), mask_click (add_new_mask with mask.png, then one negative click on the same
frame: sam2 feeds the mask's logits, clamped to ±32, as prev_sam_mask_logits)."""
import os
import numpy as np, torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

here = os.path.dirname(os.path.abspath(__file__))
cfg = OmegaConf.load(os.path.join(here, "config.yaml"))
model = instantiate(cfg.model, _recursive_=True).eval()
model.load_state_dict(torch.load(os.path.join(here, "..", "..", "..", "Plugins", "SAM2", "Resources", "sam2-tiny", "model.pt"), map_location="cpu")["model"])
nan = float("nan")
cases = {
    "click": ([[175.5, 95.0]], [1], None),
    "clicks": ([[175.5, 95.0], [60.0, 30.25]], [1, 0], None),
    "box": ([], [], [120.0, 40.0, 229.0, 149.0]),
    "box_point": ([[130.0, 50.0]], [0], [110.0, 35.5, 240.0, 160.0]),
    "mask_click": ([[140.0, 60.0]], [0], None),
}
mask = np.array(Image.open(os.path.join(here, "mask.png"))) > 0
out = {}
with torch.inference_mode():
    for name, (points, labels, box) in cases.items():
        state = model.init_state(video_path=os.path.join(here, "frames"))
        kw = {}
        if points:
            kw["points"] = np.array(points, np.float32)
            kw["labels"] = np.array(labels, np.int32)
        if box is not None:
            kw["box"] = np.array(box, np.float32)
        if name == "mask_click":
            model.add_new_mask(state, frame_idx=0, obj_id=1, mask=torch.from_numpy(mask))
        model.add_new_points_or_box(state, frame_idx=0, obj_id=1, **kw)
        logits, scores = {}, {}
        for fi, ids, masks in model.propagate_in_video(state):
            logits[fi] = masks[0, 0].float().numpy()
        od = state["output_dict_per_obj"][0]
        for key in ("cond_frame_outputs", "non_cond_frame_outputs"):
            for fi, o in od[key].items():
                scores[fi] = float(o["object_score_logits"].reshape(-1)[0])
        L = np.stack([logits[i] for i in sorted(logits)]).astype(np.float32)
        S = np.array([scores[i] for i in sorted(logits)], np.float32)
        out[name + "_points"] = np.array(points, np.float32).reshape(-1, 2)
        out[name + "_labels"] = np.array(labels, np.int32)
        out[name + "_box"] = np.array(box if box is not None else [nan] * 4, np.float32)
        out[name + "_mask_logits"] = L
        out[name + "_object_scores"] = S
        print(name, "logits", L.shape, "frame-0 range", float(L[0].min()), float(L[0].max()),
              "positive fraction per frame", [round(float((l > 0).mean()), 4) for l in L], "scores", S)
np.savez(os.path.join(here, "prompts.npz"), **out)
