"""Theory toolkit and training diagnostics.

* Signal propagation and criticality: `signal_propagation`, `critical_W_std`, `phase_diagram`.
* Kernel-target alignment: `kernel_target_alignment`, `rank_architectures`.
* Spectra and learning curves: `eigendecomposition`, `effective_rank`, `predicted_learning_curve`.
* Operator kernels (physics-informed): `operator_kernel` with `laplacian`, `gradient`,
  `divergence`, `elasticity`, `identity`, `stack`.
* NTK saliency: `ntk_saliency`, `spearman`.
* Finite-width corrections: `relu_gradient_fluctuation`, `measure_gradient_fluctuation`
  (Hanin & Nica's ``exp(5 depth / width)``), `ntk_width_corrections`, `ensemble_bias_variance`;
  Gaussianity of finite outputs: `output_gaussianity`, `ks_distance`.
* Training diagnostics (lazy vs rich): `kernel_movement`, `weight_movement`, `empirical_kernel`,
  `track_training`, `TrainingTrace`.

>>> from infwidth import stax
>>> from infwidth.analysis import critical_W_std
>>> round(critical_W_std(stax.Relu()) ** 2, 3)   # He initialisation
2.0
"""

from .alignment import Ranked, kernel_alignment, kernel_target_alignment, rank_architectures
from .finite_width import (
    BiasVariance,
    GradientFluctuation,
    WidthCorrections,
    ensemble_bias_variance,
    measure_gradient_fluctuation,
    ntk_width_corrections,
    relu_gradient_fluctuation,
    relu_mlp,
)
from .gaussianity import Gaussianity, ks_distance, output_gaussianity
from .operators import (
    Operator,
    divergence,
    elasticity,
    gradient,
    identity,
    laplacian,
    operator_kernel,
    stack,
)
from .saliency import NTKSaliency, ntk_saliency, spearman
from .signal import (
    CHAOTIC,
    CRITICAL,
    ORDERED,
    UNBOUNDED,
    PhaseDiagram,
    SignalPropagation,
    correlation_propagation,
    critical_W_std,
    dual_kernel,
    phase_diagram,
    plot_phase_diagram,
    signal_propagation,
)
from .spectra import (
    LearningCurve,
    MeasuredLearningCurve,
    effective_rank,
    eigendecomposition,
    learning_curve_from_spectrum,
    measured_learning_curve,
    predicted_learning_curve,
)
from .training import (
    TrainingTrace,
    empirical_kernel,
    kernel_movement,
    track_training,
    weight_movement,
)

__all__ = [
    "dual_kernel",
    "SignalPropagation",
    "signal_propagation",
    "correlation_propagation",
    "critical_W_std",
    "PhaseDiagram",
    "phase_diagram",
    "plot_phase_diagram",
    "ORDERED",
    "CRITICAL",
    "CHAOTIC",
    "UNBOUNDED",
    "kernel_alignment",
    "kernel_target_alignment",
    "Ranked",
    "rank_architectures",
    "eigendecomposition",
    "effective_rank",
    "LearningCurve",
    "learning_curve_from_spectrum",
    "predicted_learning_curve",
    "MeasuredLearningCurve",
    "measured_learning_curve",
    "Operator",
    "operator_kernel",
    "identity",
    "gradient",
    "laplacian",
    "divergence",
    "elasticity",
    "stack",
    "NTKSaliency",
    "ntk_saliency",
    "spearman",
    "TrainingTrace",
    "empirical_kernel",
    "kernel_movement",
    "track_training",
    "weight_movement",
    "relu_gradient_fluctuation",
    "relu_mlp",
    "GradientFluctuation",
    "measure_gradient_fluctuation",
    "WidthCorrections",
    "ntk_width_corrections",
    "BiasVariance",
    "ensemble_bias_variance",
    "Gaussianity",
    "output_gaussianity",
    "ks_distance",
]
