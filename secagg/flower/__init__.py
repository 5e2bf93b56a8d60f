"""Flower adapter (work in progress)."""
