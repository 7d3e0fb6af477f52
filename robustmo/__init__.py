"""robustmo: build model organisms, attack them with untargeted training, measure robustness."""

__version__ = "0.1.0"
