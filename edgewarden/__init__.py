"""edgewarden: an industrial edge control gateway.

Sub-packages: ``gateway`` (the daemon and its CLI), ``training`` (offline training, the
``train`` extra), ``simulators`` (PLC twins), ``hil`` (the hardware-in-the-loop bench) and
``data`` (what the wheel ships besides code: example configs, the demo's models, the
systemd unit).
"""
