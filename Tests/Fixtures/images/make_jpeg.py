"""JPEG fixtures: Pillow 13.0 (libjpeg-turbo 3.2) encodes a 37×29 RGB and a grey image, a
progressive and a 4:2:0-subsampled one, and writes what Pillow decodes as .npy (uint8, H×W[×C]).
Menagerie's libjpeg reader must match these within the IDCT's ±1 (both use the default islow IDCT)."""
import numpy as np
from PIL import Image

rng = np.random.default_rng(7)
y, x = np.mgrid[0:29, 0:37]
rgb = np.stack([(x * 7) % 256, (y * 9) % 256, ((x + y) * 5) % 256], axis=-1).astype(np.float64)
rgb = np.clip(rgb + rng.normal(0, 12, rgb.shape), 0, 255).astype(np.uint8)
cases = {
    "jpeg_rgb444": (Image.fromarray(rgb), dict(quality=90, subsampling=0)),
    "jpeg_rgb420_progressive": (Image.fromarray(rgb), dict(quality=75, subsampling=2, progressive=True)),
    "jpeg_gray": (Image.fromarray(rgb[..., 0]), dict(quality=85)),
}
for name, (image, options) in cases.items():
    image.save(name + ".jpg", **options)
    np.save(name + ".npy", np.asarray(Image.open(name + ".jpg")))
# Not a JPEG: the reader must say so.
with open("truncated.jpg", "wb") as f:
    f.write(open("jpeg_rgb444.jpg", "rb").read()[:200])
