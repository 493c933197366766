"""Errors that the command line reports as one line (no traceback)."""


class BenchError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class DataError(BenchError):
    """An image or label file that cannot be read."""


class WeightsError(BenchError):
    """Missing or mismatching model weights."""


class ConfigError(BenchError):
    """An unknown name, option or value."""
