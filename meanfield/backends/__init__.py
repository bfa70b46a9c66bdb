"""Backends register themselves with :func:`meanfield._simulate.register_backend` on import."""
from . import _spectral  # noqa: F401,E402
from . import _particles  # noqa: F401,E402
from . import _particles_sh  # noqa: F401,E402
from . import _hybrid  # noqa: F401,E402
