"""Experiments that exist only to exercise the reproduction contract in tests."""
