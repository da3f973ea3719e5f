"""neural-tangents' private module paths, for code that imports them.

neural-tangents' own tests and some user scripts import a few names from
``neural_tangents._src`` (``_DEFAULT_TESTING_NTK_IMPLEMENTATION``, ``batching``,
``monte_carlo``, ``utils.utils.axis_after_dot``, ...). With the package name changed to
``infwidth`` those imports resolve here, to infwidth's own implementations. Nothing here is
public API: new code should use `infwidth` and `infwidth.stax` directly.
"""
