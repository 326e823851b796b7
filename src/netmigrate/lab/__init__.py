"""The local lab: network namespaces, veths and addresses on one machine."""
