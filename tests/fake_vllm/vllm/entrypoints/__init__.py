"""Stand-in for vLLM in launch tests (no GPU needed)."""
