"""Studies: pipelines of their own that reuse the library (docs/ARCHITECTURE.md)."""
