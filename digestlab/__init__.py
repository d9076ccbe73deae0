"""digestlab: a machine-learning paper digest that reproduces the claims it reports."""

from pathlib import Path

__version__ = "0.1.0"


def package_files(*patterns: str) -> list[str]:
    """Files of the digestlab package matching glob `patterns`, as sorted absolute paths."""
    root = Path(__file__).resolve().parent
    return sorted(str(path) for pattern in patterns for path in root.glob(pattern))
