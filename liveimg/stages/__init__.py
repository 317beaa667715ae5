"""The build's stages, one module each, each a ``run(ctx)`` over the :class:`~liveimg.context.Build`.

:data:`liveimg.pipeline.STAGES` lists them in the order they run.  A stage reads what the
earlier ones made from the context, does its one job through the library module that knows
how (:mod:`liveimg.guest`, :mod:`liveimg.rootfs`, the layout, :mod:`liveimg.dracut`,
:mod:`liveimg.pxe`, :mod:`liveimg.manifest`), and sets what it made; it runs under
:meth:`~liveimg.context.Build.stage`, whose name is the one errors, timings and the manifest
give it.
"""
