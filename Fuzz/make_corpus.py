"""Seed corpora for `make fuzz` (Fuzz/Corpus/<target>/): a few small valid files per target, copied
from Tests/Fixtures or written here with numpy, Pillow and safetensors (pip) and tiffcp (Debian's
libtiff-tools). Crash reproducers are added next to the seeds by hand (named crash-*), never
regenerated. Run from the repository root: python3 Fuzz/make_corpus.py"""
import io
import json
import os
import shutil
import struct

import numpy as np
from PIL import Image
from safetensors.numpy import save

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
corpus = os.path.join(root, "Fuzz", "Corpus")
fixtures = os.path.join(root, "Tests", "Fixtures")


def put(target, name, data):
    os.makedirs(os.path.join(corpus, target), exist_ok=True)
    with open(os.path.join(corpus, target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def copy(target, path, name=None):
    put(target, name or os.path.basename(path), open(os.path.join(fixtures, path), "rb").read())


# JSON: configs, a plugin's metadata, and edge cases of the grammar.
copy("json", "hf/opt-tiny-config.json")
copy("json", "npy/values.json")
put("json", "edge.json", '{"a": [1, -2.5e-3, true, false, null, "\\u00e9\\ud83d\\ude00\\n"], "b": {"": {}}, "c": []}')
put("json", "deep.json", "[" * 64 + "]" * 64)

# npy: numpy's own files.
for f in ["f32_2x3.npy", "u8_2x2x3.npy", "f64_scalar.npy", "bool_3.npy", "i64_4.npy", "f32_fortran.npy"]:
    copy("npy", "npy/" + f)

# pickle and torch: the fixtures written by Tests/Fixtures/torch/make_fixtures.py (torch, numpy),
# the hostile ones included, and a few hand-made pickles of the opcodes the fixtures do not use.
for f in ("arrays-p2.pkl", "arrays-p4.pkl", "arrays-p5.pkl", "evil-os-system.pkl", "evil-popen.pkl"):
    copy("pickle", os.path.join("torch", f))
put("pickle", "containers.pkl", bytes([0x80, 2, 0x7D, 0x71, 0, 0x28, 0x58, 1, 0, 0, 0, 0x61, 0x5D, 0x28, 0x4B, 1, 0x8A, 1, 0xFF,
                                       0x88, 0x4E, 0x65, 0x58, 1, 0, 0, 0, 0x62, 0x68, 0, 0x75, 0x2E]))
for f in ("wrapped.pth", "protocol4.pt", "tensors.pt", "evil.pt", "legacy.pt", "short-storage.pt", "missing-record.pt", "bad-crc.pt",
          "zip64.pt", "big-endian.pt"):
    copy("torch", os.path.join("torch", f))

# safetensors: written by the reference implementation.
put("safetensors", "two.safetensors", save({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([7], dtype=np.int64)}))
put("safetensors", "empty_and_meta.safetensors",
    save({"e": np.zeros((0, 4), np.float32), "h": np.ones(3, np.float16), "u": np.arange(5, dtype=np.uint8)}, metadata={"format": "pt"}))
put("safetensors", "scalar.safetensors", save({"s": np.array(3.5, dtype=np.float64)}))

# PNG: the 16-bit fixtures, and small palette / interlaced / grey+alpha images from Pillow.
for f in ["gray16.png", "rgb16.png", "rgba16.png", "ga16.png"]:
    copy("png", "images/" + f)
y, x = np.mgrid[0:9, 0:11]
rgb = np.stack([x * 20, y * 25, (x + y) * 10], axis=-1).astype(np.uint8)
for name, image, options in [("palette.png", Image.fromarray(rgb).quantize(8), {}),
                             ("interlaced.png", Image.fromarray(rgb), {"interlace": 1}),
                             ("la.png", Image.fromarray(rgb).convert("LA"), {}),
                             ("bilevel.png", Image.fromarray(rgb).convert("1"), {})]:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    put("png", name, buffer.getvalue())

# TIFF: every kind of make_tiff.py, and exact-path ones (16-bit, float, tiled).
for f in ["tiff_palette.tif", "tiff_cmyk.tif", "tiff_miniswhite.tif", "tiff_bilevel.tif", "tiff_ycbcr_tiled.tif", "tiff_bomb_tile.tif"]:
    copy("tiff", "images/" + f)
for name, image in [("gray16.tif", Image.fromarray((x * 1000 + y).astype(np.uint16))),
                    ("float.tif", Image.fromarray((x / 7 + y).astype(np.float32))),
                    ("rgba.tif", Image.fromarray(rgb).convert("RGBA"))]:
    buffer = io.BytesIO()
    image.save(buffer, "TIFF")
    put("tiff", name, buffer.getvalue())
buffer = io.BytesIO()
Image.fromarray(rgb).save(buffer, "TIFF", compression="tiff_deflate")
put("tiff", "rgb_deflate.tif", buffer.getvalue())

# JPEG: Pillow's fixtures.
for f in ["jpeg_gray.jpg", "jpeg_rgb420_progressive.jpg", "jpeg_rgb444.jpg", "truncated.jpg"]:
    copy("jpeg", "images/" + f)

# tokenizer.json: a byte-level BPE small enough to mutate.
alphabet = [chr(c) for c in range(ord("a"), ord("h"))] + ["Ġ", "<s>", "</s>"]
vocab = {t: i for i, t in enumerate(alphabet + ["ab", "abc", "Ġa"])}
put("tokenizer", "tiny.json", json.dumps({
    "version": "1.0",
    "added_tokens": [{"id": 8, "content": "<s>", "special": True}, {"id": 9, "content": "</s>", "special": True}],
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                       "special_tokens": {"<s>": {"id": "<s>", "ids": [8], "tokens": ["<s>"]}}},
    "model": {"type": "BPE", "vocab": vocab, "merges": ["a b", ["ab", "c"], "Ġ a"]},
}))

# tokenizer.json: a SentencePiece-style BPE (LLaMA-2's layout: Prepend/Replace normalizer, byte
# fallback over all 256 byte tokens, the decoder chain), small enough to mutate.
pieces = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + ["\u2581", "a", "b", "c", "\u2581a", "ab", "\u2581ab"]
put("tokenizer", "sentencepiece-bpe.json", json.dumps({
    "version": "1.0",
    "added_tokens": [{"id": 0, "content": "<unk>", "special": True}, {"id": 1, "content": "<s>", "special": True},
                     {"id": 2, "content": "</s>", "special": True}],
    "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                       {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
    "pre_tokenizer": None,
    "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                       "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
    "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                                                 {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(pieces)}, "merges": ["\u2581 a", "a b", "\u2581a b"],
              "unk_token": "<unk>", "byte_fallback": True, "fuse_unk": True},
}))

# tokenizer.model: the two SentencePiece fixtures (BPE with byte fallback; Unigram with a charsmap).
copy("sentencepiece", "spm-tiny/bpe.model")
copy("sentencepiece", "spm-tiny/unigram.model")

# Model configs: timm, open_clip, Hugging Face decoders.
copy("configs", "vit-cam-tiny/config.json", "timm.json")
copy("configs", "openclip-tiny/open_clip_config.json", "open_clip.json")
copy("configs", "hf/llama-tiny-config.json")
copy("configs", "hf/opt-tiny-config.json")

# YAML: SAM 2's resolved hydra config, and edge cases of the subset.
copy("yaml", "sam2-tiny/config.yaml")
put("yaml", "flow.yaml", b"a: {b: [1, 2, {c: d}], e: 'x''y'}\nf:\n- - 1\n")
put("yaml", "deep.yaml", b"a: " + b"[" * 200 + b"]" * 200 + b"\n")
put("yaml", "anchors.yaml", b"a: &x 1\nb: *x\n")

# Plugin metadata, as a plugin publishes it.
tensor = {"name": "prediction", "dtypes": ["u8", "i32"], "shape": "H×W", "summary": "labels", "optional": False}
put("metadata", "plugin.json", json.dumps({
    "name": "segmentation-metrics", "version": "1.0.0", "summary": "IoU", "license": "MIT", "authors": ["a"],
    "paper": {"title": "t", "url": "https://example.org"},
    "components": [{"id": "segmentation-metrics", "kind": "metric", "summary": "s",
                    "operations": [{"name": "evaluate", "summary": "s", "inputs": [tensor], "outputs": [dict(tensor, name="iou")]}],
                    "options": {"type": "object", "properties": {"classes": {"type": "integer", "default": 0}}}, "tour": True}]}))
put("metadata", "minimal.json", json.dumps({"name": "x", "version": "1", "summary": "", "license": "", "authors": [], "components": []}))

# IDX: u32 big-endian length of the images file, the images file, the labels file.
def idx_pair(n, size):
    images = struct.pack(">IIII", 0x803, n, size, size) + bytes((i * 37) % 256 for i in range(n * size * size))
    labels = struct.pack(">II", 0x801, n) + bytes(i % 10 for i in range(n))
    return struct.pack(">I", len(images)) + images + labels
put("idx", "three_4x4.bin", idx_pair(3, 4))
put("idx", "two_1x1.bin", idx_pair(2, 1))

# ActivityNet ground truth and predictions.
gt = json.load(open(os.path.join(fixtures, "anet-small", "ground_truth.json")))
videos = dict(list(gt["database"].items())[:2])
put("activitynet", "ground_truth.json", json.dumps(dict(gt, database=videos)))
pred = json.load(open(os.path.join(fixtures, "anet-small", "predictions.json")))
put("activitynet", "predictions.json", json.dumps(dict(pred, results={k: v[:3] for k, v in list(pred["results"].items())[:2]})))
