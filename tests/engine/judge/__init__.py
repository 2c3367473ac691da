"""Tests of the face judge on real photos that ship inside packages, and of its checks on synthetic faces."""
