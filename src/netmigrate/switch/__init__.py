"""The lab switch: the NetMigrate pipeline over AF_PACKET ports, served over P4Runtime."""
