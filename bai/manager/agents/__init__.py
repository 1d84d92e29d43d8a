"""The manager's side of its agents: RPC clients, heartbeats, liveness.

:class:`~bai.manager.agents.pool.AgentPool` is one Trio service of the
manager (``await nursery.start(pool.serve)``).  It

* listens to every agent's ``agent_started``, ``agent_heartbeat`` and
  ``agent_terminated`` events (a broadcast subscription, so every manager
  process sees every agent) and keeps the ``agents`` table in step: a
  heartbeat inserts or updates the agent's row (status ALIVE, RPC address,
  region, resource group, architecture, capacity, compute plugins) and
  registers the images its catalog announces in the ``images`` table (a name
  and architecture that already exist, and aliases already taken, are left
  alone).  A heartbeat identical to the last one written causes no write;
* declares an agent LOST when no heartbeat came for ``manager.heartbeat-timeout``
  seconds while this process was reading the bus (counted from this
  process's start for an agent it never heard from, and from the end of the
  manager's own bus outage: a silence it could not have heard proves
  nothing, and after an outage every agent gets a full timeout to be heard
  again; see :func:`~bai.manager.agents.liveness.silent_too_long`).  In the
  same transaction the agent's kernels move on through
  :mod:`bai.manager.transitions` with reason ``agent-lost``: TERMINATING
  ones to TERMINATED and those not started yet to ERROR, so their sessions
  end and free their slots at once (occupancy is derived from kernels),
  while started ones become RUNNING_DEGRADED and wait
  ``manager.lost-agent-grace`` seconds for their agent.  An agent
  heard again within that grace gets them back: the sync below returns each
  kernel the agent still has to RUNNING and ends the others.  When the grace
  runs out they end as ERROR (``agent-lost``), and an agent that comes back
  later has them destroyed as strays;
* treats an agent that announced its own shutdown (``agent_terminated``) the
  same way after a grace period in which the agent's own
  ``agent_kernel_terminated`` reports normally arrive first (reason
  ``agent-terminated`` for what is left);
* when it first hears from an agent (or the agent restarted), reconciles
  the two views with the agent's ``sync_kernel_registry``: kernels the
  manager believes alive there but the agent does not have are reported
  ended by the agent (``agent_kernel_terminated``), and kernels the agent
  runs that the database does not know as alive are destroyed
  (``not-found-in-manager``).  A sync the agent or the database failed is
  run again at the agent's next heartbeat;
* after that sync, checks each heartbeat's ``kernel_statuses`` (the kernels
  the agent has) against the agent's RUNNING kernels in the database, for
  the case where the agent's ``agent_kernel_terminated`` report was lost:
  when two heartbeats in a row lack a kernel, the sync runs again and the
  agent reports that kernel's end anew, so its session ends and its slots
  are freed within a heartbeat or two;
* asks every manager for a scheduling pass (through its
  :class:`~bai.manager.protocols.ScheduleRequester`) when an agent's
  capacity appears or disappears;
* keeps one :class:`~bai.common.rpc.RPCClient` per agent address for
  :meth:`~bai.manager.agents.pool.AgentPool.call`, the only way the manager
  talks to agents.

Guarantees: every wait on an agent is bounded by the caller's timeout or
``manager.rpc-timeout``; a malformed heartbeat is logged and ignored, never
fatal; an agent whose resource group does not exist is not registered (and
so never receives kernels), with an error in the log; events are published
only after the transaction that caused them committed.

Modules, each importing only those above it:

* :mod:`~bai.manager.agents.beats` -- what a heartbeat says (pure);
* :mod:`~bai.manager.agents.registration` -- the agent's row and its images;
* :mod:`~bai.manager.agents.liveness` -- the judgement of silence, and a
  departed agent's kernels;
* :mod:`~bai.manager.agents.clients` -- the RPC clients;
* :mod:`~bai.manager.agents.sync` -- the kernel sync;
* :mod:`~bai.manager.agents.pool` -- :class:`AgentPool`, composed of them.
"""

from bai.manager.agents.pool import AgentPool

__all__ = ["AgentPool"]
