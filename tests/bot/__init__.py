"""Tests of the service, the front ends and the CLI."""
