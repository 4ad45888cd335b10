#!/usr/bin/env python3
"""Writes seed corpora for the fuzz targets whose inputs sit behind a magic
number and a checksum (frames, link, dealer messages, datasets): valid
inputs, so that libFuzzer starts past the gates. Run from the repository
root: python3 fuzz/make_seeds.py (writes fuzz/seeds/<target>/)."""
import os, struct, zlib

def frame(kind, session, seq, payload):
    h = b"MV" + bytes([1, kind]) + struct.pack("<QII", session, seq, len(payload))
    return h + payload + struct.pack("<I", zlib.crc32(h + payload) & 0xFFFFFFFF)

def put(target, name, data):
    d = os.path.join("fuzz", "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

# link: session 7, sequence 0, 1, 2 (the target's link expects session 7)
stream = b"".join(frame(k, 7, i, bytes(range(i * 5, i * 5 + 9))) for i, k in enumerate([2, 3, 1]))
put("link", "three-frames", stream)
put("link", "one-data", frame(2, 7, 0, b"\x01" * 40))
# frame: a piece size byte, then frames
put("frame", "stream", b"\x05" + stream)
# dealer_msg: session 7, op 0, then correction words
put("dealer_msg", "op0", struct.pack("<QQ", 7, 0) + b"\x00" * 32)
# dataset: split byte, an IDX image file of 2 28x28 images, its labels
im = struct.pack(">IIII", 2051, 2, 28, 28) + bytes(range(256)) * 6 + bytes(32)
lb = struct.pack(">II", 2049, 2) + b"\x03\x07"
put("dataset", "two-images", struct.pack("<H", len(im)) + im + lb)
# checkpoint: the data.pkl of the test checkpoint
import zipfile
z = zipfile.ZipFile(os.path.join("harness", "tests", "data", "tiny-mpcvit.pth.tar"))
put("checkpoint", "tiny-mpcvit-data.pkl", z.read([n for n in z.namelist() if n.endswith("data.pkl")][0]))
