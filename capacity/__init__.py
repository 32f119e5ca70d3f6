"""Grid model, HELM load flow, built-in feeders and profiles, and the OCM band optimiser.

Knows nothing of chains or markets (see docs/interfaces.md)."""
