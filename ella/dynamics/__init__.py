"""Paper 003, effect of equivariance on training dynamics: a 2-D smoke-plume simulator and its
C4 data sets (:mod:`~ella.dynamics.plume`), networks on its density-and-velocity fields
(:mod:`~ella.dynamics.networks`), next-frame training (:mod:`~ella.dynamics.training`) and the
curvature measures of the trained models (:mod:`~ella.dynamics.measures`); generated isotropic
3-D turbulence and its super-resolution data set (:mod:`~ella.dynamics.turbulence`) and the
3-D super-resolution networks (:mod:`~ella.dynamics.superres`).
"""

from ella.dynamics.measures import curvature_measures
from ella.dynamics.networks import (
    FieldCNN,
    FieldGCNN,
    FieldSteerableCNN,
    cnn_width_for,
    regular_to_vector,
    vector_to_regular,
)
from ella.dynamics.plume import (
    NextFrameData,
    PlumeConfig,
    next_frame_data,
    plume_dataset,
    simulate,
)
from ella.dynamics.superres import (
    SuperResCNN,
    SuperResFit,
    SuperResGCNN,
    fit_superresolution,
    octahedral_to_vector,
    superres_cnn_width,
    upsample,
    vector_to_octahedral,
)
from ella.dynamics.training import FitResult, fit_next_frame, rmse
from ella.dynamics.turbulence import (
    SuperResolutionData,
    TurbulenceConfig,
    downsample,
    energy_spectrum,
    evolve_turbulence,
    flow_statistics,
    initial_field,
    rotate_velocity,
    simulate_turbulence,
    superresolution_data,
)

__all__ = [
    "FieldCNN",
    "FieldGCNN",
    "FieldSteerableCNN",
    "FitResult",
    "NextFrameData",
    "PlumeConfig",
    "SuperResCNN",
    "SuperResFit",
    "SuperResGCNN",
    "SuperResolutionData",
    "TurbulenceConfig",
    "cnn_width_for",
    "curvature_measures",
    "downsample",
    "energy_spectrum",
    "evolve_turbulence",
    "fit_next_frame",
    "fit_superresolution",
    "octahedral_to_vector",
    "superres_cnn_width",
    "upsample",
    "vector_to_octahedral",
    "flow_statistics",
    "initial_field",
    "next_frame_data",
    "plume_dataset",
    "regular_to_vector",
    "rmse",
    "rotate_velocity",
    "simulate",
    "simulate_turbulence",
    "superresolution_data",
    "vector_to_regular",
]
