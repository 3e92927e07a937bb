"""The same tiny DiT as facebookresearch/DiT's original checkpoint: diffusers' names mapped back to DiT's
(the inverse of diffusers' scripts/convert_dit_to_diffusers.py), saved with torch.save as a plain state dict
in original/dit-tiny.pt, with original/vae -> ../vae beside it.

DiT has ONE timestep/class embedding shared by all blocks; diffusers stores a copy per block (and conditions
the final layer on block 0's). This fixture's blocks have different random embeddings, so the .pt takes block
0's, and the reference eps for it (expected/eps_original.npy) is diffusers' output after tying every block's
embedding to block 0's — the model the .pt describes. Also written: expected/eps_original_dit.npy, the same
model computed with DiT's own numerics (timestep frequencies exp(-ln(1e4)·k/128) instead of /127, the MLP's
LayerNorm eps 1e-6 instead of 1e-5), patched into diffusers for this script.
Usage: /work/venv-torch/bin/python make_original.py   (in this folder; diffusers 0.42)"""
import os, math, numpy as np, torch
from diffusers import DiTTransformer2DModel
import diffusers.models.embeddings as E

here = os.path.dirname(os.path.abspath(__file__))
tr = DiTTransformer2DModel.from_pretrained(os.path.join(here, "transformer")).eval()
sd = tr.state_dict(); D = tr.inner_dim; L = tr.config.num_layers; p = tr.config.patch_size
out = {}
out["x_embedder.proj.weight"] = sd["pos_embed.proj.weight"]; out["x_embedder.proj.bias"] = sd["pos_embed.proj.bias"]
out["pos_embed"] = tr.pos_embed.pos_embed.clone().float()            # [1, T, D]: DiT stores it as a (frozen) parameter
e = "transformer_blocks.0.norm1.emb."
out["t_embedder.mlp.0.weight"] = sd[e + "timestep_embedder.linear_1.weight"]; out["t_embedder.mlp.0.bias"] = sd[e + "timestep_embedder.linear_1.bias"]
out["t_embedder.mlp.2.weight"] = sd[e + "timestep_embedder.linear_2.weight"]; out["t_embedder.mlp.2.bias"] = sd[e + "timestep_embedder.linear_2.bias"]
out["y_embedder.embedding_table.weight"] = sd[e + "class_embedder.embedding_table.weight"]
for i in range(L):
    b = f"transformer_blocks.{i}."; o = f"blocks.{i}."
    out[o + "attn.qkv.weight"] = torch.cat([sd[b + "attn1.to_q.weight"], sd[b + "attn1.to_k.weight"], sd[b + "attn1.to_v.weight"]], 0)
    out[o + "attn.qkv.bias"] = torch.cat([sd[b + "attn1.to_q.bias"], sd[b + "attn1.to_k.bias"], sd[b + "attn1.to_v.bias"]], 0)
    out[o + "attn.proj.weight"] = sd[b + "attn1.to_out.0.weight"]; out[o + "attn.proj.bias"] = sd[b + "attn1.to_out.0.bias"]
    out[o + "mlp.fc1.weight"] = sd[b + "ff.net.0.proj.weight"]; out[o + "mlp.fc1.bias"] = sd[b + "ff.net.0.proj.bias"]
    out[o + "mlp.fc2.weight"] = sd[b + "ff.net.2.weight"]; out[o + "mlp.fc2.bias"] = sd[b + "ff.net.2.bias"]
    out[o + "adaLN_modulation.1.weight"] = sd[b + "norm1.linear.weight"]; out[o + "adaLN_modulation.1.bias"] = sd[b + "norm1.linear.bias"]
out["final_layer.linear.weight"] = sd["proj_out_2.weight"]; out["final_layer.linear.bias"] = sd["proj_out_2.bias"]
out["final_layer.adaLN_modulation.1.weight"] = sd["proj_out_1.weight"]; out["final_layer.adaLN_modulation.1.bias"] = sd["proj_out_1.bias"]
os.makedirs(os.path.join(here, "original"), exist_ok=True)
torch.save({k: v.contiguous().clone() for k, v in out.items()}, os.path.join(here, "original", "dit-tiny.pt"))
if not os.path.lexists(os.path.join(here, "original", "vae")):
    os.symlink("../vae", os.path.join(here, "original", "vae"))

# The model the .pt describes, in diffusers: every block's embedding = block 0's.
with torch.no_grad():
    for i in range(1, L):
        tr.transformer_blocks[i].norm1.emb.load_state_dict(tr.transformer_blocks[0].norm1.emb.state_dict())
z = np.load(os.path.join(here, "expected.npz"))
x, t, y = torch.from_numpy(z["x_t"]), torch.from_numpy(z["t"]), torch.from_numpy(z["y"])
with torch.no_grad():
    eps = tr(x, timestep=t, class_labels=y).sample.numpy()
np.save(os.path.join(here, "expected", "eps_original.npy"), eps)
# DiT's own numerics: frequencies over half (downscale_freq_shift 0) and the MLP LayerNorm at eps 1e-6.
for blk in tr.transformer_blocks:
    blk.norm1.emb.time_proj.downscale_freq_shift = 0
    blk.norm3.eps = 1e-6
with torch.no_grad():
    eps_dit = tr(x, timestep=t, class_labels=y).sample.numpy()
np.save(os.path.join(here, "expected", "eps_original_dit.npy"), eps_dit)
print("pt tensors", len(out), "eps", eps.shape, "max |diffusers - DiT numerics|", float(np.abs(eps - eps_dit).max()))
