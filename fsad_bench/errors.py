"""Errors a user can act on: each message names the file or value and the fix."""


class FsadError(Exception):
    """Base class; the CLI prints these as one line instead of a traceback."""


class DatasetError(FsadError, ValueError):
    """Bad or missing data on disk."""


class ProtocolError(FsadError, ValueError):
    """A protocol file or episode request that cannot be played."""


class PluginError(FsadError, LookupError):
    """Unknown, duplicate or broken method plugin."""


class WeightsError(FsadError, FileNotFoundError):
    """Pretrained weights that cannot be found offline."""
