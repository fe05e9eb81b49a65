"""PID tuning from a step test in the audit log (``edgewarden tune``)."""
