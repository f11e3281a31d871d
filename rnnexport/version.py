"""The version of rnnexport, in a module of its own: a module that took it from the package
(`from rnnexport import __version__`) would import the package's `__init__`, which imports the
API, which imports that module again (an import cycle)."""

__version__ = "0.1.0"
