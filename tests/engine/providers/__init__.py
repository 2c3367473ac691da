"""Tests for the remote provider backends against the fake servers."""
