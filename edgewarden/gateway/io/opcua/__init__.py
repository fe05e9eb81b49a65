"""OPC UA: the connection model and tag-source rules (connection.py), the value codec
(codec.py), certificates and endpoint checks (security.py) and the transport
(transport.py). Importing the package loads no client library."""
