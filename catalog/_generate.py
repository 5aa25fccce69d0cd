"""Generating the model catalogs from the installed timm and timm's published results (no file writing).

:func:`generate_all_catalog` builds the ``all`` catalog: every pretrained ImageNet-1k classifier
(1000 classes) that the installed timm lists, with its pretrained config (input size, crop,
interpolation, mean/std), family, pretraining data, recipe, and the published accuracies of
``catalog/data/results-*.csv`` joined on (model, img_size) at the model's default eval size; also
the arch -> default tag map and timm's deprecated names. :func:`generate_catalog_files` renders it
and the ``tiny``, ``paper`` and ``paper-sweep`` catalogs as the text of the files under
``catalog/models/`` (``scripts/generate_catalog.py`` writes them; ``lee reevaluate`` regenerates
``all`` into the cache to find models that a newer timm added).

timm is imported inside the functions only.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import warnings
from dataclasses import dataclass
from typing import Any

from catalog._files import PACKAGE_DIR
from catalog._spec import ModelSpec, spec_from_dict

__all__ = ["GeneratedCatalogs", "all_catalog_text", "generate_all_catalog", "generate_catalog_files", "generated_specs"]

DATA = PACKAGE_DIR / "data"
GENERATED_BY = "scripts/generate_catalog.py"
SOURCES = "catalog/data/ (timm results/ snapshot, huggingface/pytorch-image-models@aa4b5850, 2026-08-08)"

RESULT_FILES = {
    "": "results-imagenet.csv",
    "_v2": "results-imagenetv2-matched-frequency.csv",
    "_sketch": "results-sketch.csv",
    "_r": "results-imagenet-r.csv",
    "_real": "results-imagenet-real.csv",
}

# Coarse family of each timm module (modules not listed are convolutional networks).
FAMILY_OF_MODULE = {
    **dict.fromkeys(
        [
            "beit",
            "cait",
            "crossvit",
            "davit",
            "deit",
            "eva",
            "hiera",
            "mvitv2",
            "naflexvit",
            "nest",
            "pit",
            "pvt_v2",
            "swin_transformer",
            "swin_transformer_v2",
            "swin_transformer_v2_cr",
            "tnt",
            "twins",
            "vision_transformer",
            "vision_transformer_relpos",
            "volo",
            "xcit",
        ],
        "vit",
    ),
    **dict.fromkeys(
        [
            "byoanet",
            "coat",
            "convit",
            "csatv2",
            "efficientformer",
            "efficientformer_v2",
            "efficientvit_mit",
            "efficientvit_msra",
            "edgenext",
            "fastvit",
            "gcvit",
            "iformer",
            "levit",
            "lowformer",
            "maxxvit",
            "metaformer",
            "mobilevit",
            "nextvit",
            "shvit",
            "swiftformer",
            "tiny_vit",
            "vision_transformer_hybrid",
            "visformer",
        ],
        "hybrid",
    ),
    "mlp_mixer": "mixer",
    "efficientvim": "ssm",
    "sequencer": "rnn",
}

# Tokens of a pretrained tag that name training data, and the data name recorded for them.
DATA_TOKENS = {
    "in1k": "in1k",
    "in12k": "in12k",
    "in21k": "in21k",
    "in22k": "in22k",
    "laion2b": "laion2b",
    "laiona": "laion2b",
    "laion400m": "laion400m",
    "openai": "openai-wit400m",
    "m38m": "merged-38m",
    "m30m": "merged-30m",
    "jft": "jft300m",
    "ig1b": "ig1b",
    "seer": "ig1b",
    "yfcc100m": "yfcc100m",
    "webli": "webli",
    "dfn2b": "dfn2b",
    "datacomp1b": "datacomp1b",
    "metaclip": "metaclip",
}
# pretrain column of model_metadata-in1k.csv -> data name.
METADATA_DATA = {"jft300m": "jft300m", "yfc": "yfcc100m", "ig1b": "ig1b", "in21k": "in21k", "in1k": "in1k"}

# Paper names whose timm resolution is wrong or missing, with why (checked by hand against timm 1.0.31):
PAPER_OVERRIDES = {
    # timm maps both to resnext101_32x8d.fb_wsl_ig1b_ft_in1k (a slip in resnet.py's deprecation map);
    # the matching-width weights exist under the current names.
    "ig_resnext101_32x16d": "resnext101_32x16d.fb_wsl_ig1b_ft_in1k",
    "ig_resnext101_32x32d": "resnext101_32x32d.fb_wsl_ig1b_ft_in1k",
    # Removed arch names; the same SAM-trained weights are now tags of the plain ViT archs.
    "vit_base_patch32_sam_224": "vit_base_patch32_224.sam_in1k",
    "vit_base_patch16_sam_224": "vit_base_patch16_224.sam_in1k",
}

# Paper names that have no counterpart among current timm's ImageNet-1k classifiers, with why. timm's own
# deprecation map sends each to some other model, which would silently evaluate other weights.
PAPER_UNRESOLVED = {
    "ig_resnext101_32x48d": "timm 1.0.31 has no resnext101_32x48d weights (its deprecation map sends the name to "
    "resnext101_32x8d.fb_wsl_ig1b_ft_in1k)",
    # In 2022 these were the 21843-class ImageNet-21k heads; today they are the goog_in21k tags (not 1k classifiers).
    "mixer_b16_224_in21k": "the 2022 weights are mixer_b16_224.goog_in21k, a 21843-class ImageNet-21k classifier",
    "mixer_l16_224_in21k": "the 2022 weights are mixer_l16_224.goog_in21k, a 21843-class ImageNet-21k classifier",
}

# Bare 2022 names (no tag) whose timm default tag changed after 2022: the tag of the weights the bare name
# loaded in 2022. Found by matching the weight URL (or, where timm now hosts the file on the HF hub only,
# interpolation/crop_pct and the release history) of timm 0.6.12's (Nov 2022) default_cfgs against the
# pretrained cfgs of timm 1.0.31; timm 0.5.4 (Jan 2022) loads the same weights for all of them.
TAGS_2022 = {
    # ViT-B/16: augreg2 (the default since timm 0.9, 2023) is a later fine-tune of the augreg weights.
    "vit_base_patch16_224": "augreg_in21k_ft_in1k",
    # ConvNeXt: the default became in22k/in12k fine-tunes; in 2022 the bare names were the in1k weights
    # (the in22k ones were the separate ``convnext_*_in22ft1k`` names, also in the sweep).
    "convnext_tiny": "fb_in1k",
    "convnext_small": "fb_in1k",
    "convnext_base": "fb_in1k",
    "convnext_large": "fb_in1k",
    "swin_small_patch4_window7_224": "ms_in1k",  # the in22k fine-tune was added in 2023
    # TF EfficientNets: the default became the Noisy Student weights (the separate ``*_ns`` names of 2022).
    "tf_efficientnet_b0": "aa_in1k",
    "tf_efficientnet_b1": "aa_in1k",
    "tf_efficientnet_b2": "aa_in1k",
    "tf_efficientnet_b3": "aa_in1k",
    "tf_efficientnet_b4": "aa_in1k",
    "tf_efficientnet_b5": "ra_in1k",
    "tf_efficientnet_b6": "aa_in1k",
    "tf_efficientnet_b7": "ra_in1k",
    "tf_efficientnet_b8": "ra_in1k",
    # TF EfficientNet-V2: the default became the in21k fine-tunes (the separate ``*_in21ft1k`` names of 2022).
    "tf_efficientnetv2_s": "in1k",
    "tf_efficientnetv2_m": "in1k",
    "tf_efficientnetv2_l": "in1k",
    "tf_efficientnetv2_b3": "in1k",
    "efficientnet_b1": "ft_in1k",  # ra4 weights added in 2024
    # ResNets: timm's own A1 recipe weights became the defaults in 2023.
    "resnet18": "tv_in1k",  # torchvision's weights in 2022
    "resnet34": "bt_in1k",  # timm's 2019 bag-of-tricks weights in 2022
    # HRNet: the original Microsoft weights (bilinear, crop 0.875); gluon and ms_aug were added in 2023.
    "hrnet_w18_small": "ms_in1k",
    "hrnet_w18_small_v2": "ms_in1k",
    "hrnet_w18": "ms_in1k",
    # RegNets: pycls weights in 2022; torchvision v2 (tv2) and in12k (sw) fine-tunes became defaults in 2023.
    "regnetx_008": "pycls_in1k",
    "regnetx_016": "pycls_in1k",
    "regnetx_032": "pycls_in1k",
    "regnetx_080": "pycls_in1k",
    "regnetx_160": "pycls_in1k",
    "regnetx_320": "pycls_in1k",
    "regnety_004": "pycls_in1k",
    "regnety_016": "pycls_in1k",
    "regnety_120": "pycls_in1k",
    "regnety_160": "deit_in1k",  # the DeiT teacher weights were regnety_160's default in 2022
    "regnety_320": "pycls_in1k",
}

# Comparison groups of the paper (fnmatch over the resolved sweep), and extra archs to add to `paper`.
PAPER_GROUPS = {
    "resnet50_vs_blurpool": ["resnet50.*", "resnetblur50.*"],
    "vit_sizes": ["vit_*_patch16_224.*", "vit_*_patch32_224.*"],
    "deit_sizes": ["deit_*_patch16_224.*"],
    "efficientnet_sizes": ["efficientnet_b?.*", "tf_efficientnet_b?.*"],
    "resmlp_more_data": ["resmlp_*"],
    "resnext50_recipes": ["resnext50_32x4d.*"],
    "mixer": ["mixer_*"],
    "convnext": ["convnext_*"],
    "swin": ["swin_*"],
}


def parse_float(text: str | None) -> float | None:
    """Parse a results-CSV number, which may carry a thousands separator ("1,013.01")."""
    if text is None or text.strip() == "":
        return None
    return float(text.replace(",", ""))


def read_results() -> dict[tuple[str, int], dict[str, float | None]]:
    """Join the results files of ``catalog/data/`` on (model, img_size)."""
    joined: dict[tuple[str, int], dict[str, float | None]] = {}
    for suffix, fname in RESULT_FILES.items():
        with open(DATA / fname, newline="") as fh:
            for row in csv.DictReader(fh):
                key = (row["model"], int(row["img_size"]))
                rec = joined.setdefault(key, {})
                rec[f"top1{suffix}"] = parse_float(row["top1"])
                if suffix == "":
                    rec["top5"] = parse_float(row["top5"])
                    rec["params_m"] = parse_float(row["param_count"])
    return joined


def pretrain_data(tag: str) -> str | None:
    """Data of the first training stage named in a pretrained tag (None if the tag names none)."""
    for token in tag.split("_"):
        if token in DATA_TOKENS:
            return DATA_TOKENS[token]
    return None


def recipe(tag: str) -> str | None:
    """The recipe part of a tag: the tag without its data and ``ft`` tokens (``fb_in22k_ft_in1k`` -> ``fb``)."""
    kept = [t for t in tag.split("_") if t not in DATA_TOKENS and t != "ft"]
    return "_".join(kept) or None


def read_metadata(timm: Any) -> dict[str, str]:
    """model_metadata-in1k.csv (2022 names) keyed by current ``arch.tag`` names, resolved through timm."""
    from timm.models import _registry as reg

    deprecated = reg.get_deprecated_models()
    out: dict[str, str] = {}
    with open(DATA / "model_metadata-in1k.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            name = resolve_name(row["model"], deprecated, timm)
            if name:
                base = row["pretrain"].split("-")[0]
                out[name] = METADATA_DATA.get(base, base)
    return out


def resolve_name(old: str, deprecated: dict[str, str | None], timm: Any) -> str | None:
    """Current ``arch.tag`` for a (possibly old) timm name, through timm's own tables; None if removed.

    A bare name (no tag) gets the tag of the weights it loaded in 2022 where timm's default changed since
    (:data:`TAGS_2022`), else the arch's default tag if that is an ImageNet-1k classifier (1000 classes),
    else the arch's first pretrained 1000-class tag (``vit_base_patch16_224_miil`` -> ``.in21k_ft_in1k``,
    not the 11k-class default ``.in21k``).
    """
    from timm.models import _registry as reg

    if old in PAPER_OVERRIDES:
        return PAPER_OVERRIDES[old]
    if old in deprecated:
        old = deprecated[old]
        if old is None:
            return None
    arch, tag = reg.split_model_name_tag(old)
    if not timm.is_model(arch):
        return None
    if tag:
        return old
    if old in TAGS_2022:
        return f"{arch}.{TAGS_2022[old]}"
    cfg = reg.get_pretrained_cfg(arch)
    if cfg is None or not cfg.tag:
        return None
    default = f"{arch}.{cfg.tag}"
    if cfg.num_classes == 1000:
        return default
    for name, tag_cfg in reg.get_arch_pretrained_cfgs(arch).items():
        if tag_cfg.num_classes == 1000 and reg.is_model_pretrained(name):
            return name
    return default


def spec_entry(name: str, reg: Any, results: dict, metadata: dict[str, str]) -> dict[str, Any]:
    """One ``all`` catalog entry (only non-null values)."""
    arch, tag = reg.split_model_name_tag(name)
    cfg = reg.get_pretrained_cfg(name)
    module = reg._model_to_module.get(arch)
    size = int(cfg.input_size[-1])
    res = results.get((name, size), {})
    data = pretrain_data(tag)
    if data is None:
        data = metadata.get(name, "in1k")
    entry = {
        "name": name,
        "arch": arch,
        "tag": tag or None,
        "source": "hub",
        "family": FAMILY_OF_MODULE.get(module, "cnn"),
        "module": module,
        "params_m": res.get("params_m"),
        "pretrain_data": data,
        "recipe": recipe(tag),
        "img_size": size,
        "crop_pct": float(cfg.crop_pct),
        "interpolation": cfg.interpolation,
        "mean": [round(float(v), 6) for v in cfg.mean],
        "std": [round(float(v), 6) for v in cfg.std],
        "top1": res.get("top1"),
        "top5": res.get("top5"),
        "top1_v2": res.get("top1_v2"),
        "top1_sketch": res.get("top1_sketch"),
        "top1_r": res.get("top1_r"),
        "top1_real": res.get("top1_real"),
    }
    return {k: v for k, v in entry.items() if v is not None}


def _timm() -> tuple[Any, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import timm
        from timm.models import _registry as reg
    return timm, reg


def _header(timm: Any, generated_by: str) -> dict[str, str]:
    return {"generated_by": generated_by, "timm_version": timm.__version__, "sources": SOURCES}


def _all_catalog(
    timm: Any, reg: Any, results: dict, metadata: dict[str, str], header: dict[str, str]
) -> dict[str, Any]:
    names = [
        n for n in timm.list_pretrained() if not n.startswith("test_") and reg.get_pretrained_cfg(n).num_classes == 1000
    ]
    entries = [spec_entry(n, reg, results, metadata) for n in names]
    in_all = set(names)
    arch_defaults: dict[str, str] = {}
    for n in names:
        arch = reg.get_arch_name(n)
        cfg = reg.get_pretrained_cfg(arch)
        default = f"{arch}.{cfg.tag}" if cfg is not None and cfg.tag else None
        arch_defaults[arch] = default if default in in_all else arch_defaults.get(arch, n)
    aliases = {}
    deprecated_map = reg.get_deprecated_models()
    for old in sorted(deprecated_map):
        resolved = resolve_name(old, deprecated_map, timm)
        if resolved in in_all:
            aliases[old] = resolved
    return {
        **header,
        "name": "all",
        "description": "Every pretrained ImageNet-1k classifier of the installed timm (generated).",
        "version": 1,
        "arch_defaults": arch_defaults,
        "aliases": aliases,
        "models": entries,
    }


def generate_all_catalog(*, generated_by: str = GENERATED_BY) -> dict[str, Any]:
    """The ``all`` catalog of the installed timm, as the mapping ``catalog/models/all.json`` holds.

    Args:
        generated_by: What the header names as the generator.

    Returns:
        ``generated_by``, ``timm_version``, ``sources``, ``name``, ``description``, ``version``,
        ``arch_defaults`` (arch -> default ``arch.tag``), ``aliases`` (deprecated name -> current name)
        and ``models`` (one mapping per model, only non-null values).
    """
    timm, reg = _timm()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _all_catalog(timm, reg, read_results(), read_metadata(timm), _header(timm, generated_by))


def all_catalog_text(data: dict[str, Any]) -> str:
    """The text of ``all.json`` for :func:`generate_all_catalog`'s mapping."""
    return json.dumps(data, indent=0, sort_keys=False) + "\n"


def generated_specs(data: dict[str, Any], where: str = "generated catalog") -> list[ModelSpec]:
    """The specs of a generated catalog mapping, validated as the packaged ``all`` catalog's are."""
    return [spec_from_dict(ModelSpec, entry, f"{where} models[{i}]") for i, entry in enumerate(data["models"])]


@dataclass(frozen=True)
class GeneratedCatalogs:
    """Text of each catalog file (file name -> text) and a one-line summary."""

    files: dict[str, str]
    summary: str


def _yaml_list(names: list[str], comments: dict[str, str] | None = None, indent: str = "  ") -> str:
    comments = comments or {}
    return "".join(f"{indent}- {n}{'  # ' + comments[n] if n in comments else ''}\n" for n in names)


def _header_yaml(header: dict[str, str], name: str, description: str) -> str:
    return (
        f"# Generated by {header['generated_by']} from timm {header['timm_version']}; do not edit by hand.\n"
        f'name: {name}\ndescription: "{description}"\nversion: 1\n'
        f'generated_by: {header["generated_by"]}\ntimm_version: "{header["timm_version"]}"\n'
        f'sources: "{header["sources"]}"\n'
    )


def generate_catalog_files(*, generated_by: str = GENERATED_BY) -> GeneratedCatalogs:
    """The text of ``all.json``, ``tiny.yaml``, ``paper.yaml`` and ``paper-sweep.yaml`` for the installed timm.

    ``tiny``: timm's tiny ``test_*`` architectures with random weights, for tests. ``paper`` /
    ``paper-sweep``: the paper's core models and comparison groups / its whole sweep, from
    ``catalog/data/paper-models.tsv`` (2022 names resolved through timm's own deprecation map).
    """
    timm, reg = _timm()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _catalog_files(timm, reg, _header(timm, generated_by))


def _catalog_files(timm: Any, reg: Any, header: dict[str, str]) -> GeneratedCatalogs:
    results = read_results()
    metadata = read_metadata(timm)
    catalog = _all_catalog(timm, reg, results, metadata, header)
    entries = catalog["models"]
    in_all = {e["name"] for e in entries}
    files = {"all.json": all_catalog_text(catalog)}

    # tiny: timm's test_* architectures, random weights.
    tiny = []
    for n in timm.list_pretrained("test_*"):
        e = spec_entry(n, reg, results, metadata)
        e["source"] = "random"
        tiny.append(e)
    tiny_yaml = _header_yaml(header, "tiny", "timm's tiny test_* architectures, random init: for tests and smoke runs.")
    tiny_yaml += "models:\n"
    for e in tiny:
        tiny_yaml += "  - " + json.dumps({k: v for k, v in e.items() if v is not None}) + "\n"
    files["tiny.yaml"] = tiny_yaml

    # paper: resolve the 2022 names of the sweep.
    deprecated = reg.get_deprecated_models()
    resolved: dict[str, str] = {}
    core: list[str] = []
    was: dict[str, str] = {}
    unresolved: list[tuple[str, str]] = []
    with open(DATA / "paper-models.tsv", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            old = row["model"]
            new = resolve_name(old, deprecated, timm)
            if old in PAPER_UNRESOLVED:
                unresolved.append((old, PAPER_UNRESOLVED[old]))
            elif new is None:
                unresolved.append((old, "removed from timm"))
            elif new not in in_all:
                unresolved.append((old, f"resolves to {new}, not a pretrained ImageNet-1k classifier"))
            elif new in resolved.values():
                was[new] = was.get(new, new) + f", {old}"
            else:
                resolved[old] = new
                if new != old:
                    was[new] = f"was {old}"
                if row["core"] == "yes":
                    core.append(new)
    sweep = list(resolved.values())
    groups = {g: [n for n in sweep if any(fnmatch.fnmatchcase(n, p) for p in pats)] for g, pats in PAPER_GROUPS.items()}
    groups = {"core": core, **groups}
    paper_models = list(dict.fromkeys(core + [n for members in groups.values() for n in members]))
    for fname, key, desc, models in (
        (
            "paper.yaml",
            "paper",
            "The paper's core models and its comparisons (Gruver et al., ICLR 2023).",
            paper_models,
        ),
        ("paper-sweep.yaml", "paper-sweep", "Every model of the paper's sweep that current timm still has.", sweep),
    ):
        text = _header_yaml(header, key, desc)
        text += (
            "# Names resolved from catalog/data/paper-models.tsv (2022 timm names) through timm's deprecation map.\n"
        )
        text += "models:\n" + _yaml_list(models, was)
        if key == "paper":
            text += "groups:\n"
            for g, members in groups.items():
                text += f"  {g}:\n" + _yaml_list(members, indent="    ")
        text += "unresolved:\n" + "".join(f'  - {{name: {o}, reason: "{r}"}}\n' for o, r in unresolved)
        files[fname] = text
    summary = (
        f"all: {len(entries)} models ({sum('top1' in e for e in entries)} with a published top-1), "
        f"tiny: {len(tiny)}, paper: {len(paper_models)}, paper-sweep: {len(sweep)}, unresolved: {len(unresolved)}"
    )
    return GeneratedCatalogs(files, summary)
