"""The variable that switches prometheus_client to multiprocess mode, in a module that does not import it."""

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
