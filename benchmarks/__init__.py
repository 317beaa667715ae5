"""Benchmarks: macro benchmarks run side by side with the reference tools (``make bench``)."""
