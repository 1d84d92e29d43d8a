"""The session lifecycle: enqueue, start on agents, relay to kernels, destroy, reconcile.

:class:`~bai.manager.sessions.registry.SessionRegistry` is the manager's one
authority on compute sessions between the API and the agents.  Every status change goes through
:mod:`bai.manager.transitions` inside one transaction, and the events a
transition returns are published only after it committed.  No agent RPC is
ever awaited inside a transaction.

Life of a session
=================

1. :meth:`SessionRegistry.enqueue_session` validates the request and inserts
   the session and its kernels (``main1``, ``sub1`` ... ``subN``) in PENDING
   in one transaction, publishes ``session_enqueued`` and asks every
   manager's dispatcher for a pass (``do_schedule``).
2. The dispatcher (:mod:`bai.manager.scheduler.dispatcher`) moves it to
   SCHEDULED with an agent per kernel and hands its id to the registry over
   a Trio memory channel; the registry starts it.
3. Starting moves it to PREPARING (a compare-and-set: one manager wins), then
   CREATING, calls ``create_kernels`` on each agent of the session (all of
   its kernels there, with the whole cluster's ``BACKENDAI_CLUSTER_*``
   layout and the session's ``bootstrap_script``, which every kernel runs
   before it is ready) under ``manager.kernel-creation-timeout``, and moves
   each kernel to RUNNING with what the agent reported.  A failure or the
   deadline moves the session to ERROR with a reason (``failed-to-start``,
   ``bootstrap-failed``, ``creation-timeout``, ``unknown-image``,
   ``insufficient-resource``, ``agent-unavailable``, ``agent-error``) and
   the agent's message in ``status_data["error"]`` (for ``bootstrap-failed``
   it ends with the script's last output), and destroys whatever the agents
   did create (what an agent or the database keeps it from destroying is
   left to that agent's next kernel sync, see :mod:`bai.manager.agents`).
   That move publishes ``session_cancelled`` with the reason
   (see :mod:`bai.manager.transitions` for the events of ERROR).
4. A batch session then runs its ``startup_command`` in batch mode
   (``execution_started``, then ``execution_finished``, ``execution_timeout``
   or, when its kernel went away, ``execution_cancelled``); when it finishes
   the session is destroyed with result SUCCESS (exit code 0, reason
   ``task-finished``) or FAILURE (reason ``task-failed``, or ``batch-timeout``
   after ``batch_timeout`` seconds), so the
   ``session_success``/``session_failure`` events come before
   ``session_terminated``.  The job's driver is recoverable from the database
   alone: before it starts the job, a manager claims it
   (``sessions.batch_driver``, a lease in ``batch_lease`` renewed every third
   of :data:`~bai.manager.sessions.batch.BATCH_LEASE`, taken under the
   session's row lock) and records ``batch_deadline`` (start +
   ``batch_timeout``).  A RUNNING batch session whose lease ran out (its
   manager died) is claimed by the next reconcile pass of any manager, which
   asks the agent for the run with ``continue`` (the run id is
   ``batch-<session hex>``; the agent answers ``finished`` with the exit code
   again for a run already collected) and ends it like the first driver would,
   or with ``batch-timeout`` at the recorded deadline.  The job is never sent
   twice: a resumed run the agent does not know fails the session
   (``task-failed``, exit code -1).
5. :meth:`SessionRegistry.destroy_session` cancels a session that has not
   started and otherwise moves it to TERMINATING, calls ``destroy_kernel`` for
   each kernel under ``manager.kernel-termination-timeout`` and moves the
   kernels (and so the session) to TERMINATED.
6. ``agent_kernel_terminated`` reports from agents (one manager handles each)
   end the kernel: TERMINATED when it had started, ERROR when it died while
   being created; the public ``kernel_terminated`` comes from that
   transition.  A kernel in ERROR stays there (ERROR is sticky until the
   session is destroyed), so a failure's reason is never overwritten by a
   later report.

Deadlines: a reconcile loop (every few seconds) starts SCHEDULED sessions
nobody started (a manager that died mid-way), records RUNNING the sessions
in CREATING that no task of its own is starting once their agents say (the
``describe_kernels`` RPC, after
:data:`~bai.manager.sessions.reconcile.ADOPT_GRACE`) that all their kernels
are up, as their creator would have (a creator still alive leaves kernels
so recorded as they are), moves sessions stuck in PREPARING/CREATING for
longer than the creation deadline (plus the RPC deadline) to ERROR
``creation-timeout``, retries the destruction of sessions
TERMINATING for longer than the termination deadline and, after twice that,
ends them ``termination-timeout``, moves sessions stuck RESTARTING to
ERROR ``restart-timeout``, and resumes the batch jobs no manager holds (see
4. above).  So no session stays PREPARING, CREATING, TERMINATING or
RESTARTING forever, nor a batch session RUNNING past its deadline.  Its
first pass comes as the registry starts.

Whenever a pending session may now fit (one was enqueued, or a session
ended and freed its slots) the registry asks for a scheduling pass through
its :class:`~bai.manager.protocols.ScheduleRequester`: this manager's
dispatcher at once, every other manager's through ``do_schedule``.

Modules
=======

* :mod:`~bai.manager.sessions.registry`: the facade the manager and the API call.
* :mod:`~bai.manager.sessions.request`: pure checks of a create request.
* :mod:`~bai.manager.sessions.enqueue`: validation against the database, the
  insert, renaming.
* :mod:`~bai.manager.sessions.start`, :mod:`~bai.manager.sessions.terminate`,
  :mod:`~bai.manager.sessions.relay`, :mod:`~bai.manager.sessions.batch`,
  :mod:`~bai.manager.sessions.reconcile`: steps 3 to 6 and the deadlines.
* :mod:`~bai.manager.sessions.model`, :mod:`~bai.manager.sessions.errors`,
  :mod:`~bai.manager.sessions.queries`, :mod:`~bai.manager.sessions.state`:
  the data, errors, reads and in-process state they share.

Limits arithmetic (policies, caps, known slots) is :mod:`bai.manager.policy`.
"""
