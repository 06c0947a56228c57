"""A patient's consent to sharing: rules (pure) and their reading from the shared record."""
