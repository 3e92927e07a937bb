"""expected.npz (written by make_fixture.py) as one .npy per array in expected/, for the Swift tests.
Usage: /work/venv-torch/bin/python make_npy.py   (in this folder)"""
import os, numpy as np
here = os.path.dirname(os.path.abspath(__file__))
os.makedirs(os.path.join(here, "expected"), exist_ok=True)
with np.load(os.path.join(here, "expected.npz")) as z:
    for k in z.files:
        np.save(os.path.join(here, "expected", k + ".npy"), z[k])
        print(k, z[k].shape, z[k].dtype)
