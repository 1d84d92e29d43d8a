"""The manager: queues compute sessions, schedules them onto agents and governs them."""
