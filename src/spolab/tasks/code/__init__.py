"""Code tasks: running untrusted Python programs (sandbox)."""
