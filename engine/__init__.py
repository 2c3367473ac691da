"""Turning jobs into images: the request model, backends, routing and dispatch."""
