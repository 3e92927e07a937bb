"""Writes the PyTorch-checkpoint fixtures of Tests/Fixtures/torch (see README.md beside this file).

Run from the repository root with a venv holding torch, numpy and safetensors:
    python Tests/Fixtures/torch/make_fixtures.py
Expected values are what torch.load(weights_only=True) / pickle.load return, written with safetensors
under the names Menagerie gives them (dict keys and list indices joined by '.').
"""
import json, os, pickle, hashlib, shutil, sys
import numpy as np
import torch
from safetensors.torch import save_file, load_file

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.abspath(os.path.join(here, "..", "..", ".."))
torch.manual_seed(0)
rng = np.random.default_rng(0)


def flatten(obj, prefix=""):
    """(name, tensor or array) pairs in Menagerie's naming."""
    def join(k):
        return f"{prefix}.{k}" if prefix else str(k)
    if isinstance(obj, (torch.Tensor, np.ndarray, np.generic)):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, (str, int)):
                yield from flatten(v, join(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from flatten(v, join(i))


def expected(obj):
    out = {}
    for name, t in flatten(obj):
        if isinstance(t, (np.ndarray, np.generic)):
            t = torch.from_numpy(np.array(t, order="C"))  # keeps 0-d arrays 0-d
        out[name] = t.detach().contiguous().clone()
    return out


# 1. A torch checkpoint: every dtype, a transposed view, a strided slice with an offset, two views of
#    one storage at different offsets, a parameter, nested dicts and lists, inside {"model": …}.
base = torch.randn(6, 5)
shared = torch.arange(20, dtype=torch.float32) * 0.5
model = {
    "f32": torch.randn(3, 4),
    "f64": torch.randn(2, 3, dtype=torch.float64),
    "f16": torch.randn(4, 3).half(),
    "bf16": torch.randn(3, 5).bfloat16(),
    "i64": torch.randint(-2**40, 2**40, (7,), dtype=torch.int64),
    "i32": torch.randint(-2**30, 2**30, (2, 2), dtype=torch.int32),
    "i16": torch.randint(-30000, 30000, (5,), dtype=torch.int16),
    "i8": torch.randint(-128, 127, (6,), dtype=torch.int8),
    "u8": torch.randint(0, 255, (3, 3), dtype=torch.uint8),
    "bool": torch.rand(9) > 0.5,
    "scalar": torch.tensor(3.25),
    "empty": torch.zeros(0, 4),
    "transposed": base.t(),
    "strided": base[1:, 1::2],
    "shared_a": shared[2:8],
    "shared_b": shared.view(4, 5)[1:, 2:],
    "param": torch.nn.Parameter(torch.randn(2, 2)),
    "param_state": torch.nn.Parameter(torch.randn(3)),
    "nested": {"a": torch.randn(2), "b": [torch.ones(3, dtype=torch.int64), {"c": torch.randn(1, 1, 2)}]},
}
model["param_state"].note = "extra state"   # pickled through _rebuild_parameter_with_state
checkpoint = {"model": model, "epoch": 7, "note": "fixture", "lr": 0.125, "flags": [True, None, b"\x00\x01"]}
torch.save(checkpoint, os.path.join(here, "tensors.pt"))
loaded = torch.load(os.path.join(here, "tensors.pt"), weights_only=True)
assert b"_rebuild_parameter_with_state" in open(os.path.join(here, "tensors.pt"), "rb").read()
assert loaded["model"]["shared_a"].untyped_storage().data_ptr() == loaded["model"]["shared_b"].untyped_storage().data_ptr()
assert not loaded["model"]["transposed"].is_contiguous() and loaded["model"]["strided"].storage_offset() > 0
save_file(expected(loaded), os.path.join(here, "tensors-expected.safetensors"))

# 2. A state dict saved from DataParallel under "state_dict", written with the legacy typed storages'
#    pickle protocol 2 default (torch's), and one with protocol 4.
sd = {"module.layer.weight": torch.randn(3, 2), "module.layer.bias": torch.randn(3)}
torch.save({"state_dict": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}, os.path.join(here, "wrapped.pth"))
torch.save(sd, os.path.join(here, "protocol4.pt"), pickle_protocol=4)
save_file(expected(torch.load(os.path.join(here, "wrapped.pth"), weights_only=True)), os.path.join(here, "wrapped-expected.safetensors"))
torch.save(torch.arange(5, dtype=torch.int64)[1:], os.path.join(here, "bare.pt"))   # one tensor, not in a container

# 3. Plain pickles of numpy arrays and lists (CoreInfer's cluster files), protocols 2, 4 and 5.
arrays = {
    "clusters": [rng.standard_normal((4, 3)).astype(np.float32), rng.integers(-9, 9, (5,)).astype(np.int64),
                 rng.random(6) > 0.5, rng.integers(0, 255, (2, 3)).astype(np.uint8)],
    "f16": rng.standard_normal(5).astype(np.float16),
    "f64": rng.standard_normal((2, 2)),
    "i32": rng.integers(-99, 99, (3,)).astype(np.int32),
    "fortran": np.asfortranarray(rng.standard_normal((3, 4)).astype(np.float32)),
    "scalar": np.float32(1.5),
    "meta": {"names": ["a", "b"], "count": 3, "weights": [0.5, 0.25]},
    "ids": [1, 2, 3],
}
for protocol in (2, 4, 5):
    with open(os.path.join(here, f"arrays-p{protocol}.pkl"), "wb") as f:
        pickle.dump(arrays, f, protocol=protocol)
with open(os.path.join(here, "arrays-p4.pkl"), "rb") as f:
    save_file(expected(pickle.load(f)), os.path.join(here, "arrays-expected.safetensors"))

# 4. Files that must be refused: the payload would create a file, which the tests check is absent.
class Payload:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg
    def __reduce__(self):
        return (self.func, (self.arg,))

import builtins, subprocess
marker = "/tmp/menagerie-pickle-payload-ran"
evil = {
    "evil-os-system.pkl": Payload(os.system, f"touch {marker}-os-system"),
    "evil-eval.pkl": Payload(builtins.eval, f"open('{marker}-eval', 'w')"),
    "evil-popen.pkl": Payload(subprocess.Popen, ["touch", f"{marker}-popen"]),
}
for name, payload in evil.items():
    with open(os.path.join(here, name), "wb") as f:
        pickle.dump({"weights": [1.0], "x": payload}, f, protocol=4)
torch.save({"w": torch.ones(2), "x": Payload(os.system, f"touch {marker}-torch")}, os.path.join(here, "evil.pt"))

# 5. A legacy (torch < 1.6 format) checkpoint.
torch.save({"w": torch.ones(2)}, os.path.join(here, "legacy.pt"), _use_new_zipfile_serialization=False)

# 5b. Damaged archives, rewritten with zipfile (stored, CRCs recomputed unless said): a storage record
#     shorter than its tensor, a missing storage record, and one flipped byte in a storage (bad CRC).
import zipfile
def rewrite(src, dst, change):
    with zipfile.ZipFile(src) as z:
        items = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
        for name, data in items:
            data = change(name, data)
            if data is not None:
                z.writestr(name, data)
wrapped = os.path.join(here, "wrapped.pth")
rewrite(wrapped, os.path.join(here, "short-storage.pt"), lambda n, d: d[: len(d) // 2] if n.endswith("/data/0") else d)
rewrite(wrapped, os.path.join(here, "big-endian.pt"), lambda n, d: b"big" if n.endswith("/byteorder") else d)
# ZIP64: zipfile writes ZIP64 extra fields and end records past ZIP64_LIMIT; lowered, every record gets them.
limit = zipfile.ZIP64_LIMIT
zipfile.ZIP64_LIMIT = 16
rewrite(os.path.join(here, "tensors.pt"), os.path.join(here, "zip64.pt"), lambda n, d: d)
zipfile.ZIP64_LIMIT = limit
# …and the classic end record's fields set to their "see ZIP64" values, as a >4 GiB archive has them.
with open(os.path.join(here, "zip64.pt"), "r+b") as f:
    f.seek(-22 + 8, os.SEEK_END)
    f.write(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
assert len(torch.load(os.path.join(here, "zip64.pt"), weights_only=True)["model"]) == len(model)
rewrite(wrapped, os.path.join(here, "missing-record.pt"), lambda n, d: None if n.endswith("/data/1") else d)
with open(wrapped, "rb") as f:
    raw = bytearray(f.read())
with zipfile.ZipFile(wrapped) as z:
    info = next(i for i in z.infolist() if i.filename.endswith("/data/0"))
    header = info.header_offset
name_len, extra_len = int.from_bytes(raw[header + 26:header + 28], "little"), int.from_bytes(raw[header + 28:header + 30], "little")
raw[header + 30 + name_len + extra_len] ^= 0x40
with open(os.path.join(here, "bad-crc.pt"), "wb") as f:
    f.write(raw)

# 6. timm and Hugging Face folders with .bin weights instead of .safetensors (same tensors as the
#    safetensors fixtures), timm's under {"model": …} with DataParallel's "module." prefix.
vit = os.path.join(here, "vit-cam-tiny-pt")
os.makedirs(vit, exist_ok=True)
shutil.copy(os.path.join(root, "Tests/Fixtures/vit-cam-tiny/config.json"), vit)
weights = load_file(os.path.join(root, "Tests/Fixtures/vit-cam-tiny/model.safetensors"))
torch.save({"model": {"module." + k: v for k, v in weights.items()}}, os.path.join(vit, "pytorch_model.bin"))
llama = os.path.join(here, "llama-tiny-bin")
os.makedirs(llama, exist_ok=True)
for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
    shutil.copy(os.path.join(root, "Tests/Fixtures/llama-tiny", f), llama)
torch.save(load_file(os.path.join(root, "Tests/Fixtures/llama-tiny/model.safetensors")), os.path.join(llama, "pytorch_model.bin"))

# 7. SAM 2 (../shared/fixtures/sam2-tiny/model.pt, a real torch.save of SAM 2's state dict under
#    "model"): per tensor its shape, dtype and the SHA-256 of its contiguous bytes as torch.load gives them.
sam = os.path.join(root, "..", "shared", "fixtures", "sam2-tiny", "model.pt")
if not os.path.exists(sam):
    sam = "/work/shared/fixtures/sam2-tiny/model.pt"
shutil.copy(sam, os.path.join(here, "sam2-tiny.pt"))
state = torch.load(sam, weights_only=True)
digests = {}
for name, t in flatten(state):
    t = t.detach().contiguous()
    raw = t.view(torch.uint8) if t.dtype != torch.bool else t.to(torch.uint8)
    digests[name] = {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
                     "sha256": hashlib.sha256(raw.numpy().tobytes()).hexdigest()}
with open(os.path.join(here, "sam2-tiny-expected.json"), "w") as f:
    json.dump({"torch": torch.__version__, "tensors": digests}, f, indent=1, sort_keys=True)
print(f"{len(digests)} SAM 2 tensors; torch {torch.__version__}, numpy {np.__version__}")
