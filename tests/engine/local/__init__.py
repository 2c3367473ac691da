"""Tests of the local PuLID-FLUX engine, with tiny real models and scripted renderers."""
