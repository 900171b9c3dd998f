"""Matching pending bookings to drivers.

``policy`` says which drivers qualify (the one definition of a free driver) and how far
to look; ``claims`` takes bookings and drivers for this transaction; ``offers`` writes
the result onto the booking; ``nearest`` matches one booking to its nearest free driver;
``batch`` matches a region's waiting bookings together, with ``solver`` choosing the
pairs; ``log`` records why each driver was or was not chosen.
"""
