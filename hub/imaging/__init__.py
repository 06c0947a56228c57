"""Imaging and ECG: reading worklist, claims, reports, turnaround, cross-facility history."""
