"""Onsale: how reserves reach the database (gateway/onsale/reserve.py: strategy and coalescer)."""
