"""Bridges to other libraries (imported lazily; the numpy core never imports them).

* :mod:`pifskit.interop.scheduler_kwargs` -- pifskit chains as diffusers ``sigmas=`` / ``timesteps=``.
"""
