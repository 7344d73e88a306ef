"""Node runtime: poll the hub, check policy, run approved partials, protect, encrypt, post results and keep the
node's ledger."""
