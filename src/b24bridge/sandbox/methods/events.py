"""Placeholder until its methods land; registers nothing."""
