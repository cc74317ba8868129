"""edge-twin: a home gateway that keeps a live digital twin of a patient with chronic disease.

The package tree follows the data: ``ingest`` -> ``estimate`` -> ``assess`` -> ``alert`` ->
``sync``, with ``store`` and ``api`` beside them; ``pipeline`` wires them in order.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edge-twin")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
