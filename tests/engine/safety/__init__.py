"""Tests of the output safety classifier on tiny random-weight models built from configs."""
