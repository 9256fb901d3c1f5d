"""Loaded by schemathesis (SCHEMATHESIS_HOOKS, tests/contract/run_schemathesis.py)."""
import schemathesis

# A build's body is a tar archive: sent as the bytes schemathesis generates for a binary string.
schemathesis.serializer.alias("application/x-tar", "application/octet-stream")
