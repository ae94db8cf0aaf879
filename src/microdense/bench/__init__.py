"""Measuring models: size (parameters, MACs) and speed/memory benchmarks."""
