"""Test harnesses shared by the test suites; this package holds no tests.

Each module stands up one piece of a real deployment for the integration tests
and is imported as ``support.<name>`` (``tests/`` is on pytest's ``pythonpath``):
:mod:`support.agent` (a real agent and its RPC client), :mod:`support.registry`
(a manager's registry with agents), :mod:`support.api` (the HTTP API on
hypercorn with signed calls), :mod:`support.api_session` (both deployments with
the HTTP API), :mod:`support.api_gql` (a populated cluster for GraphQL
visibility), :mod:`support.hostile` (probe code a kernel runs to look for a way
out of its sandbox), :mod:`support.distributed` (managers and agents as
separate ``bai`` processes), :mod:`support.fakemanager` (the signature-checking
fake manager of the client and CLI unit tests), :mod:`support.transferserver`
(a tus and ranged-download server that can cut connections),
:mod:`support.storage` (a real storage proxy announced to a test deployment),
:mod:`support.vfolders` (folders, users and invitations through the real API),
:mod:`support.fuzz` (random API requests that must never get a 500),
:mod:`support.official` (the official client's CLI against ``bai up``) and
:mod:`support.net` (``free_port``, ``serve_app`` and each worker's agent port range),
:mod:`support.workers` (which pytest-xdist worker runs this process).
"""
