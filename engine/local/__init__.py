"""The local PuLID-FLUX engine; torch, diffusers and insightface are imported only where they run."""
