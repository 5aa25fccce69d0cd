"""Reproduces docs/findings-explain.md: liecore.explain on the offline EfficientNet-Lite0, pretrained vs random init.

    PYTHONPATH=. python docs/findings/explain_lite0.py 4     # first 4 sample-test images -> findings-explain.json

Per image and generator it keeps the LEE, the share of the image map within k px of the border, the remainder,
the unlocated shares and every layer's share (fractions of the image's LEE).
"""

import json
import sys
import time

import torch

import catalog
import liecore
from pipelines.families import activation_layouts, border_share

N = int(sys.argv[1]) if len(sys.argv) > 1 else 4
GENS = ["translate_x", "rotate"]
BANDS = (1, 2, 4, 8, 16)

spec = catalog.load_models("offline")[0]
images = catalog.load_dataset(catalog.get_dataset("sample-test")).images[:N]
out, state = {}, {}
for weights in ("file", "random"):
    torch.manual_seed(0)
    loaded = catalog.build_model(spec, weights=weights, device="cpu")
    x = loaded.preprocess([im.array for im in images])
    rec = {g: {"lee": [], "border": {k: [] for k in BANDS}, "layers": {}, "special": [], "remainder": []} for g in GENS}
    state[weights] = (loaded, x, rec)
for i in range(N):
    for weights in ("random", "file"):
        loaded, x, rec = state[weights]
        t0 = time.time()
        res = liecore.explain_all(loaded.model, x[i : i + 1], GENS, layouts=activation_layouts(loaded.model),
                                  mean=loaded.data_config["mean"], std=loaded.data_config["std"])
        for g, e in res.items():
            r = rec[g]
            m = e.image_map[0].numpy()
            r["lee"].append(float(e.lee[0]))
            for k in BANDS:
                r["border"][k].append(border_share(m, k))
            r["remainder"].append(float(e.remainder[0]))
            r["special"].append(float(sum(v[0].sum() for v in e.special.values())) if e.special else 0.0)
            for n, s in e.layer_shares().items():
                r["layers"].setdefault(n, [0.0] * N)[i] = float(s[0])
        print(weights, i, round(time.time() - t0, 1), file=sys.stderr, flush=True)
        out[weights] = {"rec": rec, "input": list(x.shape[-2:]), "n": i + 1,
                        "ids": [im.image_id for im in images[: i + 1]],
                        "classes": {n: cls for n, (_, cls, _) in e.layers.items()}}
        with open("findings-explain.json", "w") as fh:
            json.dump(out, fh)
