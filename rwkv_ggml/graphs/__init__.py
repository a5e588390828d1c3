"""Per-version RWKV graph builders: each module turns the spec's equations into engine ops."""
