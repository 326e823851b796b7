"""The NetMigrate agent: serves NetMigrate datagrams against one local Redis instance."""
