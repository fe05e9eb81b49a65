"""``edgewarden discover``: a draft config from a plant the project has never seen, by
browsing an OPC UA server (opcua.py) or importing a Modbus register list (modbus_csv.py),
written with the decisions a person must make marked (draft.py)."""
