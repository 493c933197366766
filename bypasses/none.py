"""No bypass: the protected image goes to the generator unchanged."""

from bench.contract.plugins import Bypass
from bench.contract.results import NO_COST


class NoBypass(Bypass):
    name = "none"
    version = "1"
    paper = "baseline"
    kind = "purifier"
    differentiable = True
    rung = NO_COST

    def purify(self, x):
        return x
