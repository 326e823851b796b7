"""Micro-benchmarks of one component each: agent, lab switch, slot copy."""
