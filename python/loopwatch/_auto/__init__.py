"""loopwatch's instrumentation directory: put it on ``PYTHONPATH`` (``loopwatch run --instrument``
does) and its ``sitecustomize`` instruments the known frameworks a Python child imports."""
