"""Two-way referral with a green channel: state machine, routing, worklists, record package."""
