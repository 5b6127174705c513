"""Raises while imported: tests/test_strategy_api.py checks that raydiff named this file BEFORE running it."""

raise RuntimeError("announce_probe ran")
