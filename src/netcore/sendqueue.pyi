"""Types of the compiled netcore.sendqueue (sendqueue.pyx, sendqueue.pxd).

The send queue is a C struct embedded in each Session, with C functions
only: nothing of it is visible from Python (Session.pending_bytes tells
how much is queued)."""
