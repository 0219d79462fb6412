"""Scoring model outputs against human labels (pure numpy)."""
