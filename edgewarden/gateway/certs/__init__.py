"""``edgewarden certs``: the OPC UA application certificate and the pinned server
certificate as commands (files.py: make, read and judge certificate files; pin.py: fetch
what a server presents; cli.py), and their expiry for ``config check`` and the metrics."""
