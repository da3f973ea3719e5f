"""Theory toolkit: signal propagation and criticality, kernel-target alignment, spectra and
learning curves.

>>> from infwidth import stax
>>> from infwidth.analysis import critical_W_std
>>> round(critical_W_std(stax.Relu()) ** 2, 3)   # He initialisation
2.0
"""

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
]
