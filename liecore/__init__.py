r"""liecore: Lie derivatives and the Local Equivariance Error of image models.

Pure PyTorch (imports only torch and numpy). It takes any ``nn.Module`` or callable and
knows no model names. Conventions (coordinates, signs, units, interpolants, layouts) are
stated in :mod:`liecore._grid`, :mod:`liecore._action` and :mod:`liecore._layout`.
"""

from . import metrics
from ._action import LUMA, input_tangent, sample, transform, warp
from ._aliasing import alias, alias_lie_derivative
from ._derivative import differentiable_mode, lie_derivative, lie_derivatives, output_tangent, with_output
from ._explain import Explanation, area_matrix, explain, explain_all, resample_mass
from ._generators import (
    COLOR_KINDS,
    GENERATORS,
    PAPER_GENERATORS,
    Generator,
    get_generator,
    resolve_generators,
)
from ._grid import INTERPOLATIONS, coords, d_dpixel, gradient
from ._jvprules import TangentRules
from ._layerwise import (
    DEFAULT_COMPOSITES,
    ActivationLayouts,
    LayerRecord,
    LayerwiseRecorder,
    LayerwiseResult,
    layer_kind,
    layerwise,
)
from ._layout import Layout
from ._lee import CPU_PIXELS_PER_PASS, LEEResult, assert_equivariant, lee, local_equivariance_error
from ._malloc import tune_malloc
from .metrics import (
    METRICS,
    LayerwiseEQResult,
    MetricResult,
    circular_shift_consistency,
    eq_layerwise,
    eq_r,
    eq_t,
    eq_t_frac,
    sampled_equivariance_error,
    sampled_layerwise,
    shift_consistency,
)

__version__ = "0.1.0"

__all__ = [
    "CPU_PIXELS_PER_PASS",
    "DEFAULT_COMPOSITES",
    "ActivationLayouts",
    "Explanation",
    "explain",
    "explain_all",
    "area_matrix",
    "resample_mass",
    "LayerRecord",
    "LayerwiseRecorder",
    "LayerwiseResult",
    "layer_kind",
    "layerwise",
    "COLOR_KINDS",
    "GENERATORS",
    "INTERPOLATIONS",
    "LUMA",
    "PAPER_GENERATORS",
    "Generator",
    "LEEResult",
    "Layout",
    "assert_equivariant",
    "coords",
    "d_dpixel",
    "differentiable_mode",
    "get_generator",
    "gradient",
    "input_tangent",
    "lee",
    "lie_derivative",
    "lie_derivatives",
    "local_equivariance_error",
    "output_tangent",
    "resolve_generators",
    "sample",
    "transform",
    "warp",
    "with_output",
    "METRICS",
    "LayerwiseEQResult",
    "MetricResult",
    "alias",
    "alias_lie_derivative",
    "circular_shift_consistency",
    "eq_layerwise",
    "eq_r",
    "eq_t",
    "eq_t_frac",
    "metrics",
    "sampled_equivariance_error",
    "sampled_layerwise",
    "shift_consistency",
    "TangentRules",
    "tune_malloc",
]
