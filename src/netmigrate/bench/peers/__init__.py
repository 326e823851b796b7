"""Peer systems the harness compares NetMigrate with (same data, same workload)."""
