"""digestlab: a machine-learning paper digest that reproduces the claims it reports."""

__version__ = "0.1.0"
