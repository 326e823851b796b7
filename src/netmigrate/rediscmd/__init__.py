"""Redis commands as data: the command table (read or write, where the keys are) and RESP."""
