"""An example third-party defense for bench."""

from bench_defense_example.rfgsm import RFGSM

__all__ = ["RFGSM"]
