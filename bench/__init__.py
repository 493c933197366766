"""bench: an open benchmark for proactive deepfake defenses and their bypasses."""

__version__ = "0.1.0"
RESULT_SCHEMA_VERSION = 1
