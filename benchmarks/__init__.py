# Nova's concurrency mode before anything else is imported, as
# nova-compute's entry point (and tests/nova/novaenv.py) does it: Nova 34
# refuses to start (RuntimeError) once eventlet was imported first, and
# resizedriver's own imports (oslo, futurist) bring eventlet in.  The
# unit tier has no Nova: it loads only the benchmarks' pure modules
# (tables, parsing), which need no concurrency mode.
try:
    import nova.cmd.compute  # noqa: F401
except ImportError:
    pass
