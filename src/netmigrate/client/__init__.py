"""NetMigrate client library (sync and asyncio)."""
