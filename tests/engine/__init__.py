"""Engine tests: providers, routing, dispatch and the local engine."""
