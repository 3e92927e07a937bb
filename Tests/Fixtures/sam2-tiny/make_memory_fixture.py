"""SAM 2's memory encoder and memory attention on frame 0's features, for their parity tests (sam2 1.1.0,
PyPI, CPU). Usage (from this folder, after make_encoder_fixture.py): python make_memory_fixture.py
Writes memory/: mask_logits.npy (random mask logits at image_size², scaled as SAM2Base does for the memory
encoder: sigmoid · 20 − 10), encoded.npy and encoded_pos.npy (MemoryEncoder with skip_mask_sigmoid, on
the top-level features), memory.npy and memory_pos.npy (random memories: two frames of encoded tokens
plus 4 object-pointer tokens of mem_dim, sequence-first [M, 1, mem_dim]), attended.npy (MemoryAttention on
the top-level features with their sine position encoding, num_obj_ptr_tokens = 4, [HW, 1, d_model])."""
import os
import numpy as np, torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

here = os.path.dirname(os.path.abspath(__file__))
cfg = OmegaConf.load(os.path.join(here, "config.yaml"))
model = instantiate(cfg.model, _recursive_=True).eval()
model.load_state_dict(torch.load(os.path.join(here, "..", "..", "..", "Plugins", "SAM2", "Resources", "sam2-tiny", "model.pt"), map_location="cpu")["model"])
x = torch.from_numpy(np.load(os.path.join(here, "encoder", "input.npy")))
out = os.path.join(here, "memory")
os.makedirs(out, exist_ok=True)
g = torch.Generator().manual_seed(11)
with torch.inference_mode():
    b = model.forward_image(x)
    _, feats, pos, sizes = model._prepare_backbone_features(b)
    h, w = sizes[-1]
    pix = feats[-1].permute(1, 2, 0).view(1, -1, h, w)
    logits = torch.randn((1, 1, model.image_size, model.image_size), generator=g) * 4
    mask = torch.sigmoid(logits) * model.sigmoid_scale_for_mem_enc + model.sigmoid_bias_for_mem_enc
    enc = model.memory_encoder(pix, mask, skip_mask_sigmoid=True)
    np.save(os.path.join(out, "mask_logits.npy"), logits.numpy())
    np.save(os.path.join(out, "encoded.npy"), enc["vision_features"].numpy())
    np.save(os.path.join(out, "encoded_pos.npy"), enc["vision_pos_enc"][0].numpy())
    mem_dim = enc["vision_features"].shape[1]
    m = 2 * h * w + 4
    memory = torch.randn((m, 1, mem_dim), generator=g)
    memory_pos = torch.randn((m, 1, mem_dim), generator=g) * 0.5
    att = model.memory_attention(curr=[feats[-1]], curr_pos=[pos[-1]], memory=memory, memory_pos=memory_pos, num_obj_ptr_tokens=4)
    np.save(os.path.join(out, "memory.npy"), memory.numpy())
    np.save(os.path.join(out, "memory_pos.npy"), memory_pos.numpy())
    np.save(os.path.join(out, "curr.npy"), feats[-1].numpy())
    np.save(os.path.join(out, "curr_pos.npy"), pos[-1].numpy())
    np.save(os.path.join(out, "attended.npy"), att.numpy())
print("encoded", tuple(enc["vision_features"].shape), "attended", tuple(att.shape))
