"""The shared record: the current version of every resource any member facility published."""
