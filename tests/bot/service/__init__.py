"""The service tier: use cases on a real store with a scripted backend."""
