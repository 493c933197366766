"""No bypass: the protected image goes to the generator unchanged."""

from bench.contract.plugins import Bypass


class NoBypass(Bypass):
    name = "none"
    version = "1"
    paper = "baseline"
    kind = "purifier"
    differentiable = True

    def purify(self, x):
        return x
