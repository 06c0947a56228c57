"""Who may read what, and the audit trail of every read of patient data."""
