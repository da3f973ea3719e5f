"""Theory toolkit: signal propagation and criticality, kernel-target alignment, spectra and
learning curves.

>>> from infwidth import stax
>>> from infwidth.analysis import critical_W_std
>>> round(critical_W_std(stax.Relu()) ** 2, 3)   # He initialisation
2.0
"""

from .alignment import Ranked, kernel_alignment, kernel_target_alignment, rank_architectures
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
]
