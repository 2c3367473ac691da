"""Deployment and operations: compose files, health and metrics endpoints."""
