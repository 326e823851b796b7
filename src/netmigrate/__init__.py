"""NetMigrate: live migration of Redis shards steered by a programmable switch."""

__version__ = "0.1.0"
