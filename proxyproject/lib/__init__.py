"""The plumbing every app stands on: errors, Redis, logging, encryption, console and admin helpers.

Nothing here imports an app (`tokens`, `usage`, `gateway`) or the wiring around them; the layer
contract in pyproject.toml (checked by tests/test_layers.py) keeps it that way.
"""
