"""Thin DVC stage entry points: read params, call nlrepro, write outputs atomically."""
