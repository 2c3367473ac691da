"""The platform-neutral service: use cases that take who/where/what and return neutral replies."""
