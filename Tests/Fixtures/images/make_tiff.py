"""TIFF fixtures for the kinds read through libtiff's RGBA path, with Pillow's decoding as .npy
(uint8 H×W×3, `Image.open(f).convert("RGB")`); Menagerie's reader must match within 1 (libtiff
and Pillow round CMYK, 16-bit palettes and YCbCr differently), exactly for MinIsWhite and bilevel.
Needs Pillow and numpy (pip) and tiffcp (Debian's libtiff-tools). Run in this folder:
    python3 make_tiff.py
Also writes tiff_bomb_tile.tif, a 64×64 image declaring 65536×65536 tiles (the issue's 17 GB
allocation), which must be refused before anything is allocated."""
import struct
import subprocess
import numpy as np
from PIL import Image

y, x = np.mgrid[0:29, 0:37]
rgb = np.stack([(x * 7) % 256, (y * 9) % 256, ((x + y) * 5) % 256], axis=-1).astype(np.uint8)
gray = ((x * 5 + y * 3) % 256).astype(np.uint8)


def expected(name):
    np.save(name + ".npy", np.asarray(Image.open(name + ".tif").convert("RGB")))


def set_short_tag(path, tag, value):
    """Rewrites a SHORT tag of the first IFD of a little-endian TIFF in place."""
    data = bytearray(open(path, "rb").read())
    assert data[:2] == b"II"
    ifd = struct.unpack_from("<I", data, 4)[0]
    count = struct.unpack_from("<H", data, ifd)[0]
    for i in range(count):
        entry = ifd + 2 + 12 * i
        t, kind = struct.unpack_from("<HH", data, entry)
        if t == tag:
            assert kind == 3
            struct.pack_into("<H", data, entry + 8, value)
            open(path, "wb").write(data)
            return
    raise KeyError(tag)


# Palette (8-bit indices, 16-bit colour map).
Image.fromarray(rgb).quantize(colors=37, method=Image.Quantize.MEDIANCUT).save("tiff_palette.tif")
expected("tiff_palette")
# CMYK, uncompressed.
Image.fromarray(rgb).convert("CMYK").save("tiff_cmyk.tif")
expected("tiff_cmyk")
# MinIsWhite 8-bit: Pillow writes MinIsBlack; the tag is turned to 0 (Pillow then reads "L;I").
Image.fromarray(gray).save("tiff_miniswhite.tif")
set_short_tag("tiff_miniswhite.tif", 262, 0)
expected("tiff_miniswhite")
# Bilevel (1 bit per sample).
Image.fromarray(gray).convert("1").save("tiff_bilevel.tif")
expected("tiff_bilevel")
# Tiled, JPEG-compressed YCbCr with 2×2 subsampling (tiffcp's default for -c jpeg), 16×16 tiles:
# the image's edges end inside partial tiles.
Image.fromarray(rgb).save("rgb_plain.tif")
subprocess.run(["tiffcp", "-c", "jpeg:90", "-t", "-w", "16", "-l", "16", "rgb_plain.tif", "tiff_ycbcr_tiled.tif"], check=True)
expected("tiff_ycbcr_tiled")
# Striped YCbCr JPEG as well.
subprocess.run(["tiffcp", "-c", "jpeg:90", "-r", "16", "rgb_plain.tif", "tiff_ycbcr_strips.tif"], check=True)
expected("tiff_ycbcr_strips")
import os
os.remove("rgb_plain.tif")

# The decompression bomb: 64×64 8-bit grey, tiled 65536×65536, one tile of 1 byte.
entries = [(256, 3, 1, 64), (257, 3, 1, 64), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
           (277, 3, 1, 1), (322, 4, 1, 65536), (323, 4, 1, 65536), (324, 4, 1, 0), (325, 4, 1, 1)]
ifd_offset = 8
data_offset = ifd_offset + 2 + 12 * len(entries) + 4
entries[8] = (324, 4, 1, data_offset)
out = bytearray(b"II*\x00" + struct.pack("<I", ifd_offset) + struct.pack("<H", len(entries)))
for tag, kind, count, value in entries:
    out += struct.pack("<HHI", tag, kind, count) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
out += struct.pack("<I", 0) + b"\x00"
open("tiff_bomb_tile.tif", "wb").write(out)
