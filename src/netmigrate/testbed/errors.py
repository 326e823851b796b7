"""The one error type of the testbed harness."""


class TestbedError(RuntimeError):
    """A step of ``netmigrate testbed`` failed; the message says which and why."""

    # pytest would try to collect a class named Test* imported into a test module.
    __test__ = False
