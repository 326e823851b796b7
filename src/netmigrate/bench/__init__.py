"""Benchmarks: YCSB workloads, timelines, histograms, plots and peer systems."""
