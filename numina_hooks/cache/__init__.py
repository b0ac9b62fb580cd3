"""Caches that skip transformer forwards (``on_forward`` plugins)."""

from .easycache import CacheStats, EasyCache

__all__ = ["CacheStats", "EasyCache"]
