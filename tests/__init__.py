"""Likeness test suite."""
