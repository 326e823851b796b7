"""``netmigrate gateway``: a local RESP server for unmodified Redis clients (DESIGN section 11)."""
