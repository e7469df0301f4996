"""The built-in protocol files and frozen support manifests, installed as ``fsad_protocols``.

Data only: ``fsad_bench.protocols`` reads these YAML and JSON files through
``importlib.resources``, so a plain or wheel install finds them from any working directory.
"""
