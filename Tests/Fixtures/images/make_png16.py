#!/usr/bin/env python3
"""Writes 16-bit PNG fixtures with an encoder independent of libpng (zlib + struct, filter 0
per row), and the expected samples as .npy, for PNG.readSamples tests.
  gray16.png   5×4 gray, 16-bit          → gray16.npy   (4, 5) (expected samples as int32)
  rgb16.png    3×2 RGB, 16-bit           → rgb16.npy    (2, 3, 3)
  rgba16.png   3×2 RGBA, 16-bit          → rgba16.npy   (2, 3, 4)
  ga16.png     2×2 gray+alpha, 16-bit    → ga16.npy     (2, 2, 4) as RGBA (gray copied to R, G, B)
"""
import struct, zlib
import numpy as np

def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

def write(path, samples, color_type):
    h, w = samples.shape[:2]
    raw = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(h))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    open(path, "wb").write(png)

rng = np.random.default_rng(16)
gray = rng.integers(0, 65536, size=(4, 5), dtype=np.uint16); gray[0, 0] = 65535; gray[0, 1] = 0; gray[0, 2] = 257
rgb = rng.integers(0, 65536, size=(2, 3, 3), dtype=np.uint16)
rgba = rng.integers(0, 65536, size=(2, 3, 4), dtype=np.uint16)
ga = rng.integers(0, 65536, size=(2, 2, 2), dtype=np.uint16)
write("gray16.png", gray, 0); np.save("gray16.npy", (gray).astype(np.int32))
write("rgb16.png", rgb, 2); np.save("rgb16.npy", (rgb).astype(np.int32))
write("rgba16.png", rgba, 6); np.save("rgba16.npy", (rgba).astype(np.int32))
write("ga16.png", ga, 4)
np.save("ga16.npy", (np.stack([ga[..., 0], ga[..., 0], ga[..., 0], ga[..., 1]], axis=-1)).astype(np.int32))
