"""A real cargohold registry for tests, in this process, on a free loopback port.

::

    from cargohold.testing import serve

    def test_my_tool_pushes(tmp_path):
        with serve(users={"ci": "secret"}) as registry:
            image = registry.push_image("team/app", "v1", layers=2)
            my_tool.copy(f"{registry.host}/team/app:v1", tmp_path, auth=("ci", "secret"))
            assert (tmp_path / "index.json").exists()
            assert [r.status for r in registry.requests][-1] == 200

``serve`` (``server.py``) runs the same application ``cargohold serve`` runs;
``Faults`` (``faults.py``) make it fail, or slow, on purpose; ``push_image``,
``push_index`` and ``push_artifact`` (``content.py``) seed it, or any other
registry, with real content. The pytest plugin (``pytest_plugin.py``) gives
these as the fixtures ``oci_registry`` and ``oci_registry_session``.
"""

from cargohold.testing.content import push_artifact, push_image, push_index
from cargohold.testing.faults import Faults, LoggedRequest
from cargohold.testing.server import ExternalRegistry, Registry, serve

__all__ = [
    "ExternalRegistry",
    "Faults",
    "LoggedRequest",
    "Registry",
    "push_artifact",
    "push_image",
    "push_index",
    "serve",
]
