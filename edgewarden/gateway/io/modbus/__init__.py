"""Modbus TCP: the connection model and tag-source rules (connection.py), the register
codec and read-block planner (codec.py) and the transport (transport.py). Importing the
package loads no client library."""
