"""The same pipeline with the transformer's weights as a PyTorch pickle (`diffusion_pytorch_model.bin`, what
save_pretrained(safe_serialization=False) writes) in bin-pipeline/; the other parts are links to this folder's.
Usage: /work/venv-torch/bin/python make_bin.py   (in this folder)"""
import os, shutil, torch
from safetensors.torch import load_file
here = os.path.dirname(os.path.abspath(__file__)); out = os.path.join(here, "bin-pipeline")
os.makedirs(os.path.join(out, "transformer"), exist_ok=True)
sd = load_file(os.path.join(here, "transformer", "diffusion_pytorch_model.safetensors"))
torch.save(sd, os.path.join(out, "transformer", "diffusion_pytorch_model.bin"))
shutil.copy(os.path.join(here, "transformer", "config.json"), os.path.join(out, "transformer", "config.json"))
for part in ["model_index.json", "vae", "scheduler"]:
    if not os.path.lexists(os.path.join(out, part)):
        os.symlink(os.path.join("..", part), os.path.join(out, part))
print(len(sd), "tensors")
