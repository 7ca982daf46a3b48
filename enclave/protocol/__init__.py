"""The sans-IO protocol core: HPKE, X-Wing, Binary HTTP, Oblivious HTTP and chunked OHTTP.

Nothing here does I/O: functions take bytes and return bytes, so the server, the client and the
test vectors share the same code.
"""

__all__: list[str] = []
