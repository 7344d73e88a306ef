"""Node runtime: poll the hub, check policy, run approved partials, protect, encrypt and post results."""

from nordfed.node import builtin as _builtin  # noqa: F401  (registers nordfed.count and nordfed.ping)
