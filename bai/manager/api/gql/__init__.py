"""The GraphQL admin API (``POST /admin/gql``, ``POST /admin/graphql``).

Modules: :mod:`~.routes` (the blueprint and the HTTP conventions),
:mod:`~.execution` (running graphql-core under Trio), :mod:`~.schema` (the
types and what they cover), :mod:`~.context` (the caller and visibility
rules), the resolvers by area (:mod:`~.sessions`, :mod:`~.identity`,
:mod:`~.resources`, :mod:`~.images`, :mod:`~.mutations`), the custom
scalars (:mod:`~.scalars`), the ``filter``/``order`` mini-language of
paginated lists (:mod:`~.filters`) and how a page is read (:mod:`~.pages`).
"""

from bai.manager.api.gql.routes import blueprint

__all__ = ["blueprint"]
