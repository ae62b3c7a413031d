"""Example bots: each a small package to copy."""
