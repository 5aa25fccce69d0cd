"""catalog: which models and datasets a sweep evaluates (data plus lookup).

Importing ``catalog`` imports neither timm nor torch: they are loaded inside ``build_model`` (and the
preprocessing helpers) only. It never imports ray, duckdb, liecore or any higher layer, and loads e2cnn and
scikit-learn only when a zoo model or zoo dataset is built: the model zoo's architectures and datasets live
here (``build_zoo_arch``, ``materialize_zoo_data``); training them is ``lee zoo train``'s job.
"""

from catalog._build import LoadedModel, build_model, validate_checkpoint
from catalog._checkpoint import checkpoint_sha256, hub_blob_sha256, read_checkpoint
from catalog._data_config import margin_data_config, resolve_data_config, zoo_data_config
from catalog._datasets import (
    DatasetItem,
    Image,
    ImageSet,
    fingerprint,
    get_dataset,
    list_datasets,
    list_items,
    load_dataset,
    load_dataset_file,
    load_datasets,
    resolve_uri,
    select_items,
)
from catalog._decode import DecodeError, decode_image
from catalog._errors import CatalogError, unknown_name_error
from catalog._files import read_catalog_file
from catalog._generate import all_catalog_text, generate_all_catalog, generated_specs
from catalog._hub import HubStatus, auto_weights, check_hub, hub_cached_file, hub_endpoint
from catalog._paths import cache_dir, zoo_catalog_path, zoo_dir
from catalog._registry import (
    BUILTIN_CATALOGS,
    catalog_groups,
    get_model,
    list_catalogs,
    list_models,
    load_catalog_file,
    load_models,
    names_for,
    spec_from_entry,
    unknown_model_error,
    zoo_catalog_file,
)
from catalog._sample import materialize_sample, sample_regions, write_images_parquet
from catalog._spec import WEIGHT_POLICIES, WEIGHT_SOURCES, DatasetSpec, ModelSpec
from catalog._watch import CHECKPOINT_SUFFIXES, list_checkpoints, watches
from catalog._weights import ResolvedWeights, resolve_weights
from catalog._zoo import (
    ZOO_ARCH_NAMES,
    ZOO_ARCHS,
    ZOO_SPLITS,
    ZOO_TASKS,
    build_zoo_arch,
    is_zoo_arch,
    materialize_zoo_data,
)

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "list_checkpoints",
    "watches",
    "WEIGHT_POLICIES",
    "WEIGHT_SOURCES",
    "ZOO_ARCH_NAMES",
    "ZOO_ARCHS",
    "ZOO_SPLITS",
    "ZOO_TASKS",
    "BUILTIN_CATALOGS",
    "CatalogError",
    "DatasetItem",
    "DatasetSpec",
    "DecodeError",
    "HubStatus",
    "Image",
    "ImageSet",
    "LoadedModel",
    "ModelSpec",
    "ResolvedWeights",
    "auto_weights",
    "build_model",
    "cache_dir",
    "catalog_groups",
    "checkpoint_sha256",
    "check_hub",
    "decode_image",
    "fingerprint",
    "get_dataset",
    "get_model",
    "hub_cached_file",
    "hub_blob_sha256",
    "hub_endpoint",
    "list_catalogs",
    "list_datasets",
    "list_items",
    "list_models",
    "load_catalog_file",
    "load_dataset",
    "load_dataset_file",
    "load_datasets",
    "load_models",
    "margin_data_config",
    "materialize_sample",
    "sample_regions",
    "write_images_parquet",
    "names_for",
    "spec_from_entry",
    "unknown_model_error",
    "unknown_name_error",
    "validate_checkpoint",
    "all_catalog_text",
    "generate_all_catalog",
    "generated_specs",
    "read_catalog_file",
    "read_checkpoint",
    "resolve_data_config",
    "resolve_uri",
    "resolve_weights",
    "select_items",
    "is_zoo_arch",
    "build_zoo_arch",
    "materialize_zoo_data",
    "zoo_catalog_file",
    "zoo_catalog_path",
    "zoo_data_config",
    "zoo_dir",
]
